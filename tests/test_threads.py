"""similarity/threads.py: pools made on first use, and made afresh in a forked child; OpenCV's own threads off
while callers work a core each."""

import os

import cv2

from similarity.threads import LazyThreadPool, single_threaded_opencv


def test_a_pool_is_made_once_with_its_size_and_name():
    pool = LazyThreadPool("spec-pool", lambda: 3)
    executor = pool.get()
    assert pool.get() is executor and executor._max_workers == 3
    assert executor.submit(lambda: __import__("threading").current_thread().name).result().startswith("spec-pool")


def test_a_forked_child_gets_a_pool_with_threads_of_its_own():
    pool = LazyThreadPool("spec-fork", lambda: 1)
    assert pool.get().submit(lambda: 1).result(timeout=5) == 1  # the parent's thread exists now
    child = os.fork()
    if child == 0:  # the child: the inherited executor has no thread; a fresh one must answer
        try:
            os._exit(0 if pool.get().submit(lambda: 2).result(timeout=5) == 2 else 1)
        except BaseException:
            os._exit(2)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_opencv_runs_each_call_on_the_calling_thread():
    single_threaded_opencv()

    assert cv2.getNumThreads() == 1
