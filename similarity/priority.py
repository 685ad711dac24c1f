"""Whether the CPU-heavy work of the current request runs in the background.

The API marks a lookup as background work when its client has spent most of
its budget (api/heavy.py). Verification then runs on threads of a lower OS
priority (geometry/verification.py), so every other client's lookups get the
CPU first and one busy client cannot slow the others down. A context
variable: each request thread (and each task) has its own.
"""

from __future__ import annotations

import contextlib
import contextvars

_background = contextvars.ContextVar("similarity_background_work", default=False)


def in_background() -> bool:
    return _background.get()


@contextlib.contextmanager
def background_work():
    token = _background.set(True)
    try:
        yield
    finally:
        _background.reset(token)
