"""How many verified lookups a worker process runs at once, and at what priority.

Verification is most of a lookup's CPU (api/pricing.py). Each process runs
at most SIMILARITY_MAX_PARALLEL_VERIFICATIONS verified lookups at once; a
lookup that finds them all taken waits up to SIMILARITY_VERIFY_QUEUE_SECONDS
for one, else it is answered 503 with Retry-After (the server is busy: try
again) rather than making every lookup slower.

A client that has spent more than BACKGROUND_SHARE of its lookup budget
gets one more slot per process, of its own class: its verification runs on
low-priority threads (similarity/priority.py), one such lookup at a time per
process; a second while one runs is answered 429 with Retry-After. So a
client at its full budget takes what the CPU has left, not what other
clients need. Whatever is refused here is not charged (the units are given
back).
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
    """The process's slots, made on first use (after gunicorn's fork), sized from the settings."""

    def __init__(self):
        self._lock = threading.Lock()
        self._made: tuple[int, threading.BoundedSemaphore, threading.BoundedSemaphore] | None = None

    def get(self) -> tuple[threading.BoundedSemaphore, threading.BoundedSemaphore]:
        size = settings.SIMILARITY_MAX_PARALLEL_VERIFICATIONS
        with self._lock:
            if self._made is None or self._made[0] != size:  # a test may change the setting
                self._made = (size, threading.BoundedSemaphore(size), threading.BoundedSemaphore(1))
            return self._made[1], self._made[2]


_slots = _Slots()


@contextlib.contextmanager
def verification_slot(request):
    """Hold a verification slot for the lookup ``request`` asks for, if it verifies (see the module's docstring)."""
    charge = getattr(request, "lookup_charge", None)
    price = getattr(request, "lookup_price", None)
    if price is None or not price.verifies:
        yield
        return
    normal, background = _slots.get()
    if charge is not None and charge.used > BACKGROUND_SHARE:
        if not background.acquire(blocking=False):
            charge.refund()
            raise Throttled(
                wait=RETRY_AFTER_SECONDS,
                detail="This client has spent most of its lookup budget: its verified lookups run one at a time.",
            )
        try:
            with priority.background_work():
                yield
        finally:
            background.release()
        return
    if not normal.acquire(timeout=settings.SIMILARITY_VERIFY_QUEUE_SECONDS):
        if charge is not None:
            charge.refund()
        raise ServerBusy(RETRY_AFTER_SECONDS)
    try:
        yield
    finally:
        normal.release()
