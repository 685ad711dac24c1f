"""How a process gives memory back: big allocations mapped on their own, unmapped when freed.

glibc serves allocations below a threshold from its heaps and raises that
threshold as large blocks are freed, so after a few large decodes the image
buffers come from the heaps, and freed ones stay part of the process: a
worker that decoded four 16-megapixel images on four threads kept 503 MiB
(measured). A fixed threshold keeps every large block mapped on its own and
returns it to the system on free (the same work: 77 MiB). 8 MiB, not less:
Pillow allocates big images in 16 MiB blocks and libwebp its frame in one
piece, while each lookup's own few-megabyte buffers (the upload, the
drafted image) are better reused than mapped and faulted in afresh (a 1 MiB
threshold made lookups slower; bench/RESULTS.md). A drafted image larger
than the threshold is still mapped afresh: EfficientNet-Lite0 at 384 px
drafts a 12 MP photo to 2000x1500, a 12 MB block: 5-8 ms of page faults
per lookup. A 13 MiB threshold did not win it back in gunicorn
(bench/RESULTS.md, VM H).

A fixed mmap threshold also fixes the trim threshold at glibc's 128 KiB: each
time a lookup freed its few-megabyte buffers, the top of the heap went back to
the system, and the next lookup faulted them in again. Keeping up to 16 MiB
free at the top of each heap made lookups faster (bench/RESULTS.md). Not glibc: nothing to do.
"""

import ctypes
import ctypes.util
import logging

logger = logging.getLogger(__name__)

# mallopt parameters, from glibc's malloc.h
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3


def set_mmap_threshold(size: int) -> bool:
    """Map allocations of ``size`` bytes and more on their own (0: leave glibc's default); True if applied."""
    return _mallopt(M_MMAP_THRESHOLD, "M_MMAP_THRESHOLD", size)


def set_trim_threshold(size: int) -> bool:
    """Give the top of a heap back only once ``size`` bytes are free there (0: leave glibc's); True if applied."""
    return _mallopt(M_TRIM_THRESHOLD, "M_TRIM_THRESHOLD", size)


def _mallopt(parameter: int, name: str, size: int) -> bool:
    if size <= 0:
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    applied = bool(mallopt(parameter, int(size)))
    if not applied:
        logger.warning("mallopt(%s, %d) was refused", name, size)
    return applied
