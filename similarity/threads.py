"""Thread pools a process makes on first use, and a forked child makes afresh.

A child of ``fork()`` inherits its parent's pool objects but none of their
threads, so work handed to them would wait for ever; gunicorn forks its workers
after the app is imported. :class:`LazyThreadPool` forgets its executor in the
child. Libraries' own thread teams are limited here too, where a caller already
runs a task per core (NumPy's BLAS, OpenCV's). No Django: the runtime and
geometry packages use it too.
"""

from __future__ import annotations

import contextlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable


class LazyThreadPool:
    """A ThreadPoolExecutor of ``max_workers()`` threads named ``thread_name_prefix``, made on first :meth:`get`
    (each thread runs ``initializer()`` first, if given)."""

    def __init__(
        self, thread_name_prefix: str, max_workers: Callable[[], int], initializer: Callable[[], None] | None = None
    ):
        self._thread_name_prefix = thread_name_prefix
        self._max_workers = max_workers
        self._initializer = initializer
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        os.register_at_fork(after_in_child=self._forget)

    def get(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    max_workers=self._max_workers(),
                    thread_name_prefix=self._thread_name_prefix,
                    initializer=self._initializer,
                )
            return self._executor

    def _forget(self) -> None:
        self._executor, self._lock = None, threading.Lock()


def lower_this_threads_priority(niceness: int) -> bool:
    """Raise the calling thread's niceness by ``niceness`` (Linux schedules threads one by one); whether it could."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), os.getpriority(os.PRIO_PROCESS, 0) + niceness)
    except (AttributeError, OSError):
        return False
    return True


_numpy_blas_limit = None  # threadpoolctl's limiter, once made


def single_threaded_numpy_blas() -> None:
    """Make NumPy's BLAS run each call on the calling thread only (once per process; cheap after).

    Callers that already run one task per core (the verification pool) would
    otherwise each start a BLAS team on every core: measured, two such threads
    took as long as one and twice the CPU. Only NumPy's own library is limited;
    FAISS and OpenCV bring their own.
    """
    global _numpy_blas_limit
    if _numpy_blas_limit is not None:
        return
    import numpy  # noqa: F401  (its BLAS must be loaded to be found)
    from threadpoolctl import ThreadpoolController

    controller = ThreadpoolController()
    numpy_blas = [
        info["filepath"] for info in controller.info() if info["user_api"] == "blas" and "numpy" in info["filepath"]
    ]
    _numpy_blas_limit = controller.select(filepath=numpy_blas).limit(limits=1) if numpy_blas else False


_opencv_lock = threading.Lock()
_opencv_callers = 0
_opencv_threads = 0


@contextlib.contextmanager
def opencv_on_calling_threads():
    """OpenCV's own thread team off while the caller runs OpenCV work one item per core (process-wide: OpenCV
    has no other switch; back to what it was when the last such caller is done).

    Measured in a build's feature stage, two photos at a time: with OpenCV's
    team on, each photo's blurs split again over both cores and the stage ran
    4.2-5.8 photos/s (0.32-0.40 CPU-seconds a photo); with it off, 6.8-7.1
    photos/s (0.27-0.28).
    """
    global _opencv_callers, _opencv_threads
    import cv2

    with _opencv_lock:
        if _opencv_callers == 0:
            _opencv_threads = cv2.getNumThreads()
            cv2.setNumThreads(1)
        _opencv_callers += 1
    try:
        yield
    finally:
        with _opencv_lock:
            _opencv_callers -= 1
            if _opencv_callers == 0:
                cv2.setNumThreads(_opencv_threads)
