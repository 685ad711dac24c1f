"""Exclusive work across processes: ``flock`` lock files.

An OS-level ``flock`` is released when its holder exits, so a crashed
process never keeps one. :class:`IndexBuildLock` keeps index builds one at a
time; :class:`FileLock` serves any other artifact built once for all
processes.
"""

import fcntl
import os
from pathlib import Path

from similarity.index import index_dir


class LockHeld(RuntimeError):
    """Another process holds the lock."""


class FileLock:
    """An exclusive lock on ``path``; blocking waits for the holder, else :class:`LockHeld`."""

    def __init__(self, path: Path | str, blocking: bool = True):
        self._path = Path(path)
        self.blocking = blocking
        self._fd = None

    @property
    def path(self) -> Path:
        return self._path

    def held_message(self) -> str:
        return f"Another process holds the lock {self.path}; try again when it ends."

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if self.blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            raise LockHeld(self.held_message()) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def __exit__(self, *exc):
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None
        return False


class IndexBuildLock(FileLock):
    """One index build at a time: the lock file in the index dir (never waits by default)."""

    def __init__(self, blocking: bool = False):
        super().__init__("", blocking)

    @property
    def path(self) -> Path:
        return index_dir() / "build.lock"

    def held_message(self) -> str:
        return f"Another index build is running (lock {self.path}); try again when it ends."
