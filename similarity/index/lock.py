"""One index build at a time, across processes: a ``filelock`` lock file in the index directory.

The lock is an OS-level ``flock``, released when its holder exits, so a
crashed build never keeps it.
"""

from __future__ import annotations

from pathlib import Path

import filelock

from similarity.index.snapshot import index_dir


class LockHeld(RuntimeError):
    """Another process holds the lock."""


class IndexBuildLock:
    """Held while an index is built; by default it never waits: a second build gets :class:`LockHeld`."""

    def __init__(self, blocking: bool = False):
        self.blocking = blocking
        self._lock: filelock.FileLock | None = None

    @property
    def path(self) -> Path:
        return index_dir() / "build.lock"

    def __enter__(self) -> IndexBuildLock:
        path = self.path
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = filelock.FileLock(str(path), thread_local=False)
        try:
            lock.acquire(timeout=-1 if self.blocking else 0)
        except filelock.Timeout:
            raise LockHeld(f"Another index build is running (lock {path}); try again when it ends.") from None
        self._lock = lock
        return self

    def __exit__(self, *exc) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None
