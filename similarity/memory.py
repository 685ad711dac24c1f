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
threshold made lookups slower; bench/RESULTS.md). Not glibc: nothing to do.
"""

import ctypes
import ctypes.util
import logging

logger = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # mallopt parameter, from glibc's malloc.h


def set_mmap_threshold(size: int) -> bool:
    """Map allocations of ``size`` bytes and more on their own (0: leave glibc's default); True if applied."""
    if size <= 0:
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    applied = bool(mallopt(M_MMAP_THRESHOLD, int(size)))
    if not applied:
        logger.warning("mallopt(M_MMAP_THRESHOLD, %d) was refused", size)
    return applied
