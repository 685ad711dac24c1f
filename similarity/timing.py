"""Where a lookup's time goes: named stages (decode, preprocess, model, search) per request.

Core code marks its stages with :func:`stage`; they are recorded only while a
collector is active (:func:`collect`, opened per request by
``middleware.ServerTimingMiddleware``, which reports them in a
``Server-Timing`` header that browsers' developer tools and bench/latency.py
read). Outside a request, :func:`stage` costs nothing.
"""

import contextvars
import time
from contextlib import contextmanager

_current: contextvars.ContextVar[dict | None] = contextvars.ContextVar("similarity_timings", default=None)


@contextmanager
def collect():
    """Record the stages run inside this block into the dict it yields (milliseconds)."""
    timings: dict[str, float] = {}
    token = _current.set(timings)
    try:
        yield timings
    finally:
        _current.reset(token)


@contextmanager
def stage(name: str):
    timings = _current.get()
    if timings is None:
        yield
        return
    started = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = timings.get(name, 0.0) + (time.perf_counter() - started) * 1000


def server_timing_header(timings: dict[str, float]) -> str:
    return ", ".join(f"{name};dur={milliseconds:.1f}" for name, milliseconds in timings.items())
