"""How many verified lookups a worker process runs at once, and at what priority.

Verification is most of a lookup's CPU (api/pricing.py). Each process runs
at most SIMILARITY_MAX_PARALLEL_VERIFICATIONS verified lookups at once; a
lookup that finds them all taken waits up to SIMILARITY_VERIFY_QUEUE_SECONDS
for one, else it is answered 503 with Retry-After (the server is busy: try
again) rather than making every lookup slower.

A client that has spent more than BACKGROUND_SHARE of its lookup budget
verifies in the background instead: on low-priority threads that also wait
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
        self.background_clients: set[str] = set()

    def foreground(self) -> threading.BoundedSemaphore:
        size = settings.SIMILARITY_MAX_PARALLEL_VERIFICATIONS
        with self._lock:
            if self._size != size:  # a test may change the setting
                self._size, self._foreground = size, threading.BoundedSemaphore(size)
            return self._foreground

    def enter_background(self, client: str) -> bool:
        """Whether ``client`` may start a background verification now (and then it has started)."""
        with self._lock:
            if client in self.background_clients or (
                len(self.background_clients) >= settings.SIMILARITY_MAX_PARALLEL_VERIFICATIONS
            ):
                return False
            self.background_clients.add(client)
            return True

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
        yield
        return
    if charge is not None and charge.used > BACKGROUND_SHARE:
        if not _slots.enter_background(charge.key):
            charge.refund()
            raise Throttled(
                wait=RETRY_AFTER_SECONDS,
                detail="This client has spent most of its lookup budget: its verified lookups run one at a time.",
            )
        try:
            with priority.background_work():
                yield
        finally:
            _slots.leave_background(charge.key)
        return
    foreground = _slots.foreground()
    if not foreground.acquire(timeout=settings.SIMILARITY_VERIFY_QUEUE_SECONDS):
        if charge is not None:
            charge.refund()
        raise ServerBusy(RETRY_AFTER_SECONDS)
    try:
        yield
    finally:
        foreground.release()
