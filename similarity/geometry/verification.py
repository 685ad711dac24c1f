"""Geometric verification: does a candidate photo show the same scene as the query, point for point?

The global vector finds photos that look alike; local features check that
they show the same place. Each photo gets upright RootSIFT features from the
photo with its long side at most 1,024 px (measured: on small images the
counts are chance-level): the 2,000 strongest keypoints, one per spot, found
and described from one scale space (upright_sift.py; OpenCV's SIFT gives a
spot with two dominant gradient directions twice, and builds its scale space
again to describe upright keypoints). Descriptors are kept as int8
codes of their first 64 principal components (a fixed basis,
rootsift_pca.npz, fitted by bench/fit_descriptor_pca.py): 66 kB a photo
instead of 150, and half the arithmetic of matching.

A query is matched to each candidate by an integer product of the two sets
of codes (squared distances, exact; matching.py): a match is a candidate
keypoint whose nearest query keypoint passes Lowe's ratio test (0.8) and has
it as its own nearest (mutual, so one-to-one). A pair with fewer matches than
``min_inliers`` cannot verify and stops there; the others vote for a
fundamental matrix (MAGSAC, 1.5 px): the inliers are matches that agree on
one camera geometry. The fit draws as many samples as it takes to find
``min_inliers`` agreeing matches, if they are there, with 99.9 % confidence
(50 to 2,000): a pair of different places with barely enough matches is
settled in a few dozen, not 2,000 (the inlier count of a pair that does not
verify is then what that search found). Candidates with at least
``min_inliers`` move to the front by inlier count; the others keep their
order, so queries with no verifiable neighbour are not reshuffled by chance
counts. Measured on the places photos (bench/inlier_threshold.py): every
pair of different places stays at 15 inliers or fewer, pairs of one scene
have a median of 76, hence SIMILARITY_VERIFY_MIN_INLIERS 20.

Pairs are checked on a few threads (OpenCV, ONNX Runtime and the compiled
passes release the GIL and run one thread per call; the pool gives one pair
per core): one pool at normal priority, and one for work that should only
take what the CPU has left (similarity/priority.py). Its threads run BACKGROUND_NICENESS lower, so
the OS schedules other processes' work first, and within this process they
wait before each pair while foreground verification runs (it would otherwise
share the process's GIL and caches with them).
OpenCV, Numba and ONNX Runtime are optional: without them, :func:`available`
is False and nothing is verified. No Django here.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import io
import math
import os
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from similarity import priority
from similarity.threads import (
    LazyThreadPool,
    lower_this_threads_priority,
    single_threaded_numpy_blas,
    single_threaded_opencv,
)

MAX_FEATURES = 2000
LONG_SIDE = 1024
RATIO = 0.8
MAGSAC_THRESHOLD_PX = 1.5
MAGSAC_ITERATIONS = 2000  # measured: pairs of one scene converge long before; 10,000 only cost pairs that fail
FIT_CONFIDENCE = 0.999
FIT_SAMPLE = 7  # correspondences in a minimal sample of a fundamental matrix
FIT_MIN_ITERATIONS = 50  # however few are needed in theory: noise keeps a clean sample from finding them all
MIN_MATCHES = 8  # a fundamental matrix needs eight correspondences
FORMAT_VERSION = 2  # 1: float32 points, uint8 RootSIFT (128); 2: uint16 points (1/32 px), int8 PCA codes (64)
POINT_SCALE = 32
BASIS_FILE = Path(__file__).with_name("rootsift_pca.npz")
# A features file holds what extract() writes: at most MAX_FEATURES keypoints (a few more where responses
# tie). Anything much larger is not ours, and is refused before it is decompressed.
MAX_KEYPOINTS = 4 * MAX_FEATURES
NPY_HEADER_BYTES = 4096
MAX_FILE_BYTES = MAX_KEYPOINTS * (128 + 8) + 3 * NPY_HEADER_BYTES
MEMBER_LIMITS: dict[int, dict[str, tuple[type, int | None]]] = {  # version -> member -> (dtype, columns)
    1: {"points.npy": (np.float32, 2), "descriptors.npy": (np.uint8, 128)},
    2: {"points.npy": (np.uint16, 2), "codes.npy": (np.int8, 64), "frame.npy": (np.uint16, None)},
}


def available() -> bool:
    return all(importlib.util.find_spec(module) is not None for module in ("cv2", "numba", "onnxruntime", "onnx"))


@dataclass(frozen=True)
class Basis:
    """The fixed PCA basis that turns a RootSIFT descriptor into its int8 code."""

    mean: np.ndarray  # (128,)
    components: np.ndarray  # (64, 128)
    step: float

    def codes(self, rootsift: np.ndarray) -> np.ndarray:
        projected = (rootsift.astype(np.float32) - self.mean) @ self.components.T
        return np.clip(np.round(projected / self.step), -127, 127).astype(np.int8)


@functools.cache
def basis() -> Basis:
    with np.load(BASIS_FILE, allow_pickle=False) as data:
        return Basis(data["mean"], data["components"], float(data["step"]))


@dataclass(frozen=True)
class LocalFeatures:
    """Keypoint positions (n, 2) in pixels of the frame they were found in (the photo at LONG_SIDE px at
    most, ``frame`` = its width and height) and their descriptors' int8 PCA codes (n, 64)."""

    points: np.ndarray
    codes: np.ndarray
    frame: tuple[int, int]

    def __len__(self) -> int:
        return len(self.points)

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez_compressed(
            buffer,
            points=np.round(self.points * POINT_SCALE).astype(np.uint16),
            codes=self.codes.astype(np.int8),
            frame=np.array(self.frame, dtype=np.uint16),
        )
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, frame: tuple[int, int] = (0, 0)) -> "LocalFeatures":
        """Read what :meth:`to_bytes` wrote, or a file of format 1 (its descriptors coded on reading; ``frame``
        tells its size, which it does not record); ValueError for anything else, a file claiming more than
        MAX_KEYPOINTS keypoints included (checked on the archive's declared sizes, before decompressing)."""
        if len(data) > MAX_FILE_BYTES:
            raise ValueError(f"a local features file of {len(data):,} bytes is larger than any extract() writes")
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            members = archive.zip if isinstance(archive, np.lib.npyio.NpzFile) else None
            names = set(members.namelist()) if members is not None else set()
            version = next((v for v, limits in MEMBER_LIMITS.items() if names == set(limits)), None)
            if members is None or version is None:
                raise ValueError("not a local features file")
            arrays = {}
            for name, (dtype, columns) in MEMBER_LIMITS[version].items():
                limit = MAX_KEYPOINTS * (columns or 1) * np.dtype(dtype).itemsize + NPY_HEADER_BYTES
                if members.getinfo(name).file_size > limit:
                    raise ValueError(f"a local features file claiming more than {MAX_KEYPOINTS} keypoints")
                array = archive[name.removesuffix(".npy")]
                if array.dtype != dtype or (columns and (array.ndim != 2 or array.shape[1] != columns)):
                    raise ValueError("not a local features file")
                arrays[name] = array
        points = arrays["points.npy"]
        if version == 1:
            descriptors = arrays["descriptors.npy"]
            if len(descriptors) != len(points) or len(points) > MAX_KEYPOINTS:
                raise ValueError("not a local features file")
            return cls(points, basis().codes(descriptors / np.float32(255)), frame)
        codes, stored_frame = arrays["codes.npy"], arrays["frame.npy"]
        if len(codes) != len(points) or len(points) > MAX_KEYPOINTS or stored_frame.shape != (2,):
            raise ValueError("not a local features file")
        return cls(points.astype(np.float32) / POINT_SCALE, codes, (int(stored_frame[0]), int(stored_frame[1])))


def rootsift(image, helper: Executor | None = None) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """The keypoint positions (n, 2), upright RootSIFT descriptors (n, 128, unit length) and frame size of an
    upright RGB PIL image: the MAX_FEATURES strongest distinct keypoints of it at LONG_SIDE px at most, found
    and described in one pass (similarity/geometry/upright_sift.py; ``helper``: a thread to share it with)."""
    import cv2

    from similarity.geometry import upright_sift

    single_threaded_opencv()
    single_threaded_numpy_blas()  # the descriptors' projection: a build runs a photo per core, a query shares two
    gray = np.asarray(image.convert("L"))
    height, width = gray.shape
    scale = min(1.0, LONG_SIDE / max(height, width))
    if scale < 1.0:
        gray = cv2.resize(
            gray, (max(1, round(width * scale)), max(1, round(height * scale))), interpolation=cv2.INTER_AREA
        )
    frame = (gray.shape[1], gray.shape[0])
    points, _, descriptors = upright_sift.detect_and_describe(np.ascontiguousarray(gray), MAX_FEATURES, helper)
    if not len(points):
        return np.zeros((0, 2), np.float32), np.zeros((0, 128), np.float32), frame
    root = np.sqrt(descriptors / np.maximum(descriptors.sum(axis=1, keepdims=True), 1e-7))  # RootSIFT: L1, then sqrt
    return points, root.astype(np.float32), frame


def extract(image, helper: Executor | None = None) -> LocalFeatures:
    """Local features of an upright RGB PIL image: :func:`rootsift`, its descriptors coded."""
    points, descriptors, frame = rootsift(image, helper)
    return LocalFeatures(points, basis().codes(descriptors), frame)


@dataclass(frozen=True)
class Correspondences:
    """The inlier matches of a verified pair: query points and candidate points (n, 2), each in its frame."""

    query: np.ndarray
    candidate: np.ndarray


def fit_iterations(putative_matches: int, min_inliers: int) -> int:
    """How many minimal samples the geometric fit needs to draw to find, with FIT_CONFIDENCE, a model that
    ``min_inliers`` of ``putative_matches`` agree on, if there is one (RANSAC's bound for 7-point samples);
    at least FIT_MIN_ITERATIONS, at most MAGSAC_ITERATIONS. A pair of different places that barely passes
    the putative count is settled in a few dozen samples instead of running to the cap."""
    share = min(1.0, min_inliers / max(putative_matches, 1))
    all_inliers = share**FIT_SAMPLE
    if all_inliers >= 1.0:
        needed = 1
    else:
        needed = math.ceil(math.log(1.0 - FIT_CONFIDENCE) / math.log1p(-all_inliers))
    return max(FIT_MIN_ITERATIONS, min(MAGSAC_ITERATIONS, needed))


class QueryMatcher:
    """The query's codes, matched against every candidate's (matching.py), and the geometric fit of each pair."""

    def __init__(self, query: LocalFeatures, min_matches: int = MIN_MATCHES):
        from similarity.geometry import matching

        self.query = query
        self.min_matches = max(MIN_MATCHES, min_matches)
        self._codes = matching.CodeMatcher(query.codes)
        single_threaded_opencv()

    def matches(self, candidate: LocalFeatures) -> tuple[np.ndarray, np.ndarray]:
        """Indices (query, candidate) of the mutual nearest neighbours that pass the ratio test."""
        return self._codes.matches(candidate.codes, RATIO)

    def correspondences(self, candidate: LocalFeatures) -> Correspondences:
        """The matches that agree on one camera geometry (none when there are too few to tell)."""
        import cv2

        empty = Correspondences(np.zeros((0, 2), np.float32), np.zeros((0, 2), np.float32))
        query_index, candidate_index = self.matches(candidate)
        if len(query_index) < self.min_matches:  # cannot reach min_matches inliers: no fit
            return empty
        query_points = np.ascontiguousarray(self.query.points[query_index], dtype=np.float32)
        candidate_points = np.ascontiguousarray(candidate.points[candidate_index], dtype=np.float32)
        try:
            _, mask = cv2.findFundamentalMat(
                query_points,
                candidate_points,
                cv2.USAC_MAGSAC,
                MAGSAC_THRESHOLD_PX,
                FIT_CONFIDENCE,
                fit_iterations(len(query_index), self.min_matches),
            )
        except cv2.error:  # OpenCV 5's MAGSAC can assert on degenerate point sets: no geometry to agree on
            return empty
        if mask is None:
            return empty
        inlier = mask.ravel().astype(bool)
        return Correspondences(query_points[inlier], candidate_points[inlier])

    def inliers(self, candidate: LocalFeatures) -> int:
        """Matches that agree on one camera geometry (0 when there are too few to tell)."""
        return len(self.correspondences(candidate).query)


WORKERS = max(1, len(os.sched_getaffinity(0)))  # one pair per core at a time
BACKGROUND_NICENESS = 19  # Linux's lowest priority: such threads get about 1.5 % of a busy core
_threads = LazyThreadPool("verify", lambda: WORKERS)


def _background_thread() -> None:
    lower_this_threads_priority(BACKGROUND_NICENESS)


_background_threads = LazyThreadPool("verify-background", lambda: WORKERS, initializer=_background_thread)


BACKGROUND_YIELD_SECONDS = 2.0  # the longest a background pair waits for foreground work to end


# A query's extraction shares its blurs, scan and descriptors with one more thread: it runs beside the model, then
# alone until the pairs start, with a core to spare. Its tasks never wait on anything.
_extraction_helper = LazyThreadPool("extract-helper", lambda: 1)


def extract_in_foreground(image) -> LocalFeatures:
    """:func:`extract`, counted as foreground work, on the calling thread and a helper thread (where there
    is more than one core)."""
    with priority.foreground_work():
        return extract(image, _extraction_helper.get() if WORKERS > 1 else None)


def threads(background: bool = False) -> ThreadPoolExecutor:
    """The verification threads: normal priority, or the low-priority ones (``background``)."""
    return (_background_threads if background else _threads).get()


def warm_up() -> None:
    """Before the first lookup: OpenCV set to run on the calling threads (threads.single_threaded_opencv), the
    compiled SIFT and matching kernels read from Numba's cache (about 1 s; compiled once per install, about
    10 s) and the matching product's ONNX Runtime session made."""
    from PIL import Image

    from similarity.geometry import matching

    extract(Image.new("RGB", (64, 64)))
    codes = np.zeros((2, 64), np.int8)
    matching.CodeMatcher(codes).matches(codes, RATIO)


def verify(
    query: LocalFeatures,
    candidates: Sequence[int],
    features_of: Callable[[int], LocalFeatures | None],
    *,
    min_inliers: int,
    stop_at_first: bool = False,
    background: bool = False,
) -> dict[int, Correspondences]:
    """The inlier correspondences of candidates (ids, best first) whose features exist; ``stop_at_first`` stops
    at the first candidate, in order, that reaches ``min_inliers`` (checking a core's worth of pairs at a
    time); ``background``: on the low-priority threads, each pair after foreground work is done (or
    BACKGROUND_YIELD_SECONDS have passed)."""
    matcher = QueryMatcher(query, min_matches=min_inliers)

    def check(candidate_id: int) -> tuple[int, Correspondences | None]:
        if background:
            priority.wait_while_foreground_work(BACKGROUND_YIELD_SECONDS)
        features = features_of(candidate_id)
        return candidate_id, (matcher.correspondences(features) if features is not None else None)

    found: dict[int, Correspondences] = {}
    pool = threads(background)
    step = WORKERS if stop_at_first else len(candidates)
    with contextlib.nullcontext() if background else priority.foreground_work():
        for start in range(0, len(candidates), max(1, step)):
            for candidate_id, correspondences in pool.map(check, candidates[start : start + step]):
                if correspondences is not None:
                    found[candidate_id] = correspondences
            if stop_at_first and any(
                len(found[c].query) >= min_inliers for c in candidates[start : start + step] if c in found
            ):
                break
    return found


def promote(order: Sequence[int], inliers: dict[int, int], min_inliers: int) -> list[int]:
    """Verified candidates first, by inlier count; the rest in their original order."""
    verified = sorted(
        (c for c in order if inliers.get(c, 0) >= min_inliers), key=lambda c: (-inliers[c], order.index(c))
    )
    promoted = set(verified)
    return verified + [c for c in order if c not in promoted]
