"""One index build at a time, across processes: an exclusive lock file in the index dir.

The lock is an OS-level ``flock``: it is released when its holder exits, so a
crashed build never keeps it.
"""

import fcntl
import os

from similarity.index import index_dir


class LockHeld(RuntimeError):
    """Another process is building the index."""


class IndexBuildLock:
    def __init__(self, blocking: bool = False):
        self.blocking = blocking
        self._fd = None

    @property
    def path(self):
        return index_dir() / "build.lock"

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if self.blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            raise LockHeld(f"Another index build is running (lock {self.path}); try again when it ends.") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def __exit__(self, *exc):
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None
        return False
