"""Thread pools a process makes on first use, and a forked child makes afresh.

A child of ``fork()`` inherits its parent's pool objects but none of their
threads, so work handed to them would wait for ever; gunicorn forks its workers
after the app is imported. :class:`LazyThreadPool` forgets its executor in the
child. Libraries' own thread teams are limited here too, where a caller already
runs a task per core (NumPy's BLAS, OpenCV's). No Django: the runtime and
geometry packages use it too.
"""

from __future__ import annotations

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

    Callers that already run one task per core (a build's photos, a query's
    extraction beside the model) would otherwise each start a BLAS team on
    every core: measured (when the pairs' products were BLAS's), two such
    threads took as long as one and twice the CPU. Only NumPy's own library is limited;
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


_opencv_single_threaded = False
_opencv_lock = threading.Lock()


def single_threaded_opencv() -> None:
    """Make OpenCV run each call on the calling thread only (once per process; cheap after).

    Every OpenCV call here already runs one task per core (a build's photos,
    a lookup's pairs) or shares its work with a helper thread of its own (a
    query's extraction). OpenCV's team of a thread per core made each photo's
    blurs split again: measured (VM D), a build's feature stage ran 4.2-5.8
    photos/s with it and 6.8-7.1 without; a query's extraction beside the
    model ended at 261 ms (463 ms CPU) with it and 222 ms (396 ms CPU) without.
    Set once rather than around each call: OpenCV's thread count is one
    setting for the process, not safe to change while other threads use it;
    processes set it before their first OpenCV work (the web's warm-up, a
    build before its pool starts).
    """
    global _opencv_single_threaded
    if _opencv_single_threaded:
        return
    import cv2

    with _opencv_lock:
        if not _opencv_single_threaded:
            cv2.setNumThreads(1)
            _opencv_single_threaded = True
