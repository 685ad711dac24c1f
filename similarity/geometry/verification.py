"""Geometric verification: does a candidate photo show the same scene as the query, point for point?

The global vector finds photos that look alike; local features check that
they show the same place. Each photo gets upright RootSIFT features (at most
2,000, from the photo with its long side at most 1,024 px; measured: on small
images the counts are chance-level). A query is matched to each of the top
candidates with Lowe's ratio test (0.8) kept one-to-one, and the matches
vote for a fundamental matrix (MAGSAC, 1.5 px): the inliers are matches that
agree on one camera geometry. Candidates with at least ``min_inliers`` move
to the front by inlier count; the others keep their order, so queries with
no verifiable neighbour are not reshuffled by chance counts.

Pairs are checked on a few threads (OpenCV releases the GIL): one pool at
normal priority, and one for work that should only take what the CPU has
left (similarity/priority.py). Its threads run BACKGROUND_NICENESS lower, so
the OS schedules other processes' work first, and within this process they
wait before each pair while foreground verification runs (it would otherwise
share the process's GIL and caches with them).
OpenCV is optional: without it, :func:`available` is False and nothing is
verified. No Django here.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from similarity import priority
from similarity.threads import LazyThreadPool, lower_this_threads_priority

MAX_FEATURES = 2000
LONG_SIDE = 1024
RATIO = 0.8
MAGSAC_THRESHOLD_PX = 1.5
MIN_MATCHES = 8  # a fundamental matrix needs eight correspondences
# A features file holds what extract() writes: at most MAX_FEATURES keypoints (a few more where responses
# tie). Anything much larger is not ours, and is refused before it is decompressed.
MAX_KEYPOINTS = 4 * MAX_FEATURES
NPY_HEADER_BYTES = 4096
MAX_FILE_BYTES = MAX_KEYPOINTS * (128 + 8) + 2 * NPY_HEADER_BYTES


def available() -> bool:
    return importlib.util.find_spec("cv2") is not None


@dataclass(frozen=True)
class LocalFeatures:
    """Keypoint positions (n, 2) and RootSIFT descriptors (n, 128), scaled to 0-255 bytes."""

    points: np.ndarray
    descriptors: np.ndarray

    def __len__(self) -> int:
        return len(self.points)

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez_compressed(
            buffer, points=self.points.astype(np.float32), descriptors=self.descriptors.astype(np.uint8)
        )
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> "LocalFeatures":
        """Read what :meth:`to_bytes` wrote; ValueError for anything else, a file claiming more than
        MAX_KEYPOINTS keypoints included (checked on the archive's declared sizes, before decompressing)."""
        if len(data) > MAX_FILE_BYTES:
            raise ValueError(f"a local features file of {len(data):,} bytes is larger than any extract() writes")
        limits = {"points.npy": MAX_KEYPOINTS * 2 * 4, "descriptors.npy": MAX_KEYPOINTS * 128}
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            members = archive.zip if isinstance(archive, np.lib.npyio.NpzFile) else None
            if members is None or set(members.namelist()) != set(limits):
                raise ValueError("not a local features file")
            for name, limit in limits.items():
                if members.getinfo(name).file_size > limit + NPY_HEADER_BYTES:
                    raise ValueError(f"a local features file claiming more than {MAX_KEYPOINTS} keypoints")
            points, descriptors = archive["points"], archive["descriptors"]
        if (
            points.dtype != np.float32
            or descriptors.dtype != np.uint8
            or points.ndim != 2
            or points.shape[1] != 2
            or descriptors.shape != (len(points), 128)
            or len(points) > MAX_KEYPOINTS
        ):
            raise ValueError("not a local features file")
        return cls(points, descriptors)


_sift = threading.local()


def extract(image) -> LocalFeatures:
    """Upright RootSIFT features of an upright RGB PIL image."""
    import cv2

    gray = np.asarray(image.convert("L"))
    height, width = gray.shape
    scale = min(1.0, LONG_SIDE / max(height, width))
    if scale < 1.0:
        gray = cv2.resize(
            gray, (max(1, round(width * scale)), max(1, round(height * scale))), interpolation=cv2.INTER_AREA
        )
    if not hasattr(_sift, "detector"):  # one per thread: a detector is not shared between threads
        _sift.detector = cv2.SIFT_create(nfeatures=MAX_FEATURES)  # type: ignore[attr-defined]  # missing from its stubs
    keypoints = _sift.detector.detect(gray, None)
    for keypoint in keypoints:
        keypoint.angle = 0.0  # upright: street photos are level, and orientation only adds confusion
    keypoints, descriptors = _sift.detector.compute(gray, keypoints)
    if descriptors is None or not keypoints:
        return LocalFeatures(np.zeros((0, 2), np.float32), np.zeros((0, 128), np.uint8))
    root = np.sqrt(descriptors / np.maximum(descriptors.sum(axis=1, keepdims=True), 1e-7))  # RootSIFT: L1, then sqrt
    return LocalFeatures(
        np.array([keypoint.pt for keypoint in keypoints], dtype=np.float32),
        np.clip(np.round(root * 255), 0, 255).astype(np.uint8),
    )


class QueryMatcher:
    """The query's descriptors in a FLANN index, built once per thread and matched against every candidate."""

    def __init__(self, query: LocalFeatures):
        self.query = query
        self._local = threading.local()  # OpenCV does not promise that one matcher may serve two threads

    def _matcher(self):
        import cv2

        if not hasattr(self._local, "matcher"):
            self._local.matcher = cv2.FlannBasedMatcher({"algorithm": 1, "trees": 4}, {"checks": 32})
            self._local.matcher.add([self.query.descriptors.astype(np.float32)])
            self._local.matcher.train()
        return self._local.matcher

    def inliers(self, candidate: LocalFeatures) -> int:
        """Matches that agree on one camera geometry (0 when there are too few to tell)."""
        import cv2

        if len(self.query) < MIN_MATCHES or len(candidate) < MIN_MATCHES:
            return 0
        best: dict[int, tuple[int, float]] = {}  # query keypoint -> (candidate keypoint, distance): one-to-one
        for pair in self._matcher().knnMatch(candidate.descriptors.astype(np.float32), k=2):
            if len(pair) == 2 and pair[0].distance < RATIO * pair[1].distance:
                query_index, distance = pair[0].trainIdx, pair[0].distance
                if query_index not in best or best[query_index][1] > distance:
                    best[query_index] = (pair[0].queryIdx, distance)
        if len(best) < MIN_MATCHES:
            return 0
        query_points = np.asarray(self.query.points[list(best)], dtype=np.float32)
        candidate_points = np.asarray(candidate.points[[c for c, _ in best.values()]], dtype=np.float32)
        try:
            _, mask = cv2.findFundamentalMat(
                query_points, candidate_points, cv2.USAC_MAGSAC, MAGSAC_THRESHOLD_PX, 0.999, 10000
            )
        except (
            cv2.error
        ):  # OpenCV 5's MAGSAC can assert on degenerate point sets: then there is no geometry to agree on
            return 0
        return int(mask.sum()) if mask is not None else 0


WORKERS = max(1, len(os.sched_getaffinity(0)))  # one pair per core at a time
BACKGROUND_NICENESS = 19  # Linux's lowest priority: such threads get about 1.5 % of a busy core
_threads = LazyThreadPool("verify", lambda: WORKERS)


def _background_thread() -> None:
    lower_this_threads_priority(BACKGROUND_NICENESS)


_background_threads = LazyThreadPool("verify-background", lambda: WORKERS, initializer=_background_thread)


BACKGROUND_YIELD_SECONDS = 2.0  # the longest a background pair waits for foreground work to end


def extract_in_foreground(image) -> LocalFeatures:
    """:func:`extract`, counted as foreground work."""
    with priority.foreground_work():
        return extract(image)


def threads(background: bool = False) -> ThreadPoolExecutor:
    """The verification threads: normal priority, or the low-priority ones (``background``)."""
    return (_background_threads if background else _threads).get()


def warm_up() -> None:
    """Start OpenCV's own worker threads from the calling thread, so they keep its (normal) priority: they are
    made on first use and shared by every caller, low-priority threads included."""
    from PIL import Image

    extract(Image.new("RGB", (64, 64)))


def verify(
    query: LocalFeatures,
    candidates: Sequence[int],
    features_of: Callable[[int], LocalFeatures | None],
    *,
    min_inliers: int,
    stop_at_first: bool = False,
    background: bool = False,
) -> dict[int, int]:
    """Inlier counts of candidates (ids, best first) whose features exist; ``stop_at_first`` stops at the
    first candidate, in order, that reaches ``min_inliers`` (checking a core's worth of pairs at a time);
    ``background``: on the low-priority threads, each pair after foreground work is done (or
    BACKGROUND_YIELD_SECONDS have passed)."""
    matcher = QueryMatcher(query)

    def check(candidate_id: int) -> tuple[int, int | None]:
        if background:
            priority.wait_while_foreground_work(BACKGROUND_YIELD_SECONDS)
        features = features_of(candidate_id)
        return candidate_id, (matcher.inliers(features) if features is not None else None)

    counts: dict[int, int] = {}
    pool = threads(background)
    step = WORKERS if stop_at_first else len(candidates)
    with contextlib.nullcontext() if background else priority.foreground_work():
        for start in range(0, len(candidates), max(1, step)):
            for candidate_id, inliers in pool.map(check, candidates[start : start + step]):
                if inliers is not None:
                    counts[candidate_id] = inliers
            if stop_at_first and any(counts.get(c, 0) >= min_inliers for c in candidates[start : start + step]):
                break
    return counts


def promote(order: Sequence[int], inliers: dict[int, int], min_inliers: int) -> list[int]:
    """Verified candidates first, by inlier count; the rest in their original order."""
    verified = sorted(
        (c for c in order if inliers.get(c, 0) >= min_inliers), key=lambda c: (-inliers[c], order.index(c))
    )
    promoted = set(verified)
    return verified + [c for c in order if c not in promoted]
