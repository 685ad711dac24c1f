"""Foreground and background work in a process: whether the current request's CPU-heavy work runs in the
background, and how much foreground work runs now.

The API marks a lookup as background work when its client has spent most of
its budget or already verifies in the foreground (api/heavy.py): a context
variable, each request thread (and each task) has its own. Verification then
runs on threads of a lower OS priority (geometry/verification.py), so the OS
schedules other processes' work first, and each of its pairs waits while
foreground lookups run in this process: those share the process's GIL and
caches, which no OS priority arbitrates. So one busy client cannot slow the
others down.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading

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


_foreground_running = 0
_foreground_idle = threading.Condition()


@contextlib.contextmanager
def foreground_work():
    """Count the enclosed work as foreground work of this process (nested uses count once each)."""
    global _foreground_running
    with _foreground_idle:
        _foreground_running += 1
    try:
        yield
    finally:
        with _foreground_idle:
            _foreground_running -= 1
            if not _foreground_running:
                _foreground_idle.notify_all()


def wait_while_foreground_work(at_most: float) -> None:
    """Wait while foreground work runs in this process, ``at_most`` seconds (background work still moves on a
    server that is never idle)."""
    with _foreground_idle:
        _foreground_idle.wait_for(lambda: not _foreground_running, timeout=at_most)
