"""How many verified lookups a worker process runs at once, and at what priority.

Verification is most of a lookup's CPU (api/pricing.py). Each process runs
at most SIMILARITY_MAX_PARALLEL_VERIFICATIONS verified lookups at once; a
lookup that finds them all taken waits up to SIMILARITY_VERIFY_QUEUE_SECONDS
for one, else it is answered 503 with Retry-After (the server is busy: try
again) rather than making every lookup slower.

A client verifies in the foreground one lookup at a time per process, and
only while it has spent at most BACKGROUND_SHARE of its lookup budget (a
burst of lookups at once, and whatever comes after the first half of a
budget, would otherwise take the CPU that other clients' lookups need).
Beyond that it verifies in the background: on low-priority threads that also wait
while other verification runs in the process (similarity/priority.py), one
lookup of that client at a time per process, up to
SIMILARITY_MAX_PARALLEL_VERIFICATIONS such lookups in all; beyond either,
a 429 with Retry-After. So a client at its full budget takes what the CPU
has left, not what other clients need. Whatever is refused here is not
charged (the units are given back).
"""

from __future__ import annotations

import contextlib
import threading

from django.conf import settings
from rest_framework import status
from rest_framework.exceptions import APIException, Throttled

from similarity import priority
from similarity.api.throttles import client_key

BACKGROUND_SHARE = 0.5
RETRY_AFTER_SECONDS = 5


class ServerBusy(APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_code = "server_busy"

    def __init__(self, wait: int):
        super().__init__(f"The server is busy with other verified lookups; try again in {wait} seconds.")
        self.wait = wait  # DRF's handler turns it into Retry-After


class _Slots:
    """The process's slots, made on first use (after gunicorn's fork), sized from the settings: foreground
    slots, and the clients verifying in the background now."""

    def __init__(self):
        self._lock = threading.Lock()
        self._size = 0
        self._foreground = threading.BoundedSemaphore(1)
        self.foreground_clients: set[str] = set()
        self.background_clients: set[str] = set()

    def foreground(self) -> threading.BoundedSemaphore:
        size = settings.SIMILARITY_MAX_PARALLEL_VERIFICATIONS
        with self._lock:
            if self._size != size:  # a test may change the setting
                self._size, self._foreground = size, threading.BoundedSemaphore(size)
            return self._foreground

    def enter_foreground(self, client: str) -> bool:
        """Whether ``client`` has no foreground verification running here (and then it has one)."""
        with self._lock:
            if client in self.foreground_clients:
                return False
            self.foreground_clients.add(client)
            return True

    def leave_foreground(self, client: str) -> None:
        with self._lock:
            self.foreground_clients.discard(client)

    def enter_background(self, client: str) -> str | None:
        """Why ``client`` may not start a background verification now; None when it may (and then it has)."""
        with self._lock:
            if client in self.background_clients:
                return "This client already has verified lookups running here: its next one has to wait."
            if len(self.background_clients) >= settings.SIMILARITY_MAX_PARALLEL_VERIFICATIONS:
                return "The server is busy with verified lookups of clients that use most of their budget."
            self.background_clients.add(client)
            return None

    def leave_background(self, client: str) -> None:
        with self._lock:
            self.background_clients.discard(client)


_slots = _Slots()


@contextlib.contextmanager
def verification_slot(request):
    """Hold a verification slot for the lookup ``request`` asks for, if it verifies (see the module's docstring)."""
    charge = getattr(request, "lookup_charge", None)
    price = getattr(request, "lookup_price", None)
    if price is None or not price.verifies:
        with priority.foreground_work():  # background verification in this process waits for it
            yield
        return
    client = charge.key if charge is not None else client_key(request)
    if (charge is not None and charge.used > BACKGROUND_SHARE) or not _slots.enter_foreground(client):
        with _background_slot(charge, client):
            yield
        return
    try:
        foreground = _slots.foreground()
        if not foreground.acquire(timeout=settings.SIMILARITY_VERIFY_QUEUE_SECONDS):
            if charge is not None:
                charge.refund()
            raise ServerBusy(RETRY_AFTER_SECONDS)
        try:
            with priority.foreground_work():  # the whole lookup: decode, model and verification
                yield
        finally:
            foreground.release()
    finally:
        _slots.leave_foreground(client)


@contextlib.contextmanager
def _background_slot(charge, client: str):
    refused = _slots.enter_background(client)
    if refused is not None:
        if charge is not None:
            charge.refund()
        raise Throttled(wait=RETRY_AFTER_SECONDS, detail=refused)
    try:
        with priority.background_work():
            yield
    finally:
        _slots.leave_background(client)
