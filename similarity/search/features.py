"""Local features of reference photos, for verification: kept in step with the photos, cached per process.

Features are extracted once per photo file (``extract_missing``: the embed
task, build_clip_index and the scheduled maintenance call it; one photo per
core), stored in the media storage as ``features/<photo file>.v2.npz``
(about 66 kB for 2,000 keypoints), and recorded with the file hash they came
from and their format (models.PhotoFeatures), so a replaced file's features
are extracted again and a deleted photo's are deleted with it
(signals/handlers.py). Features of an older format count as missing: the
scheduled maintenance re-extracts them a batch at a time, while lookups keep
reading the old files. Lookups read them through a small per-process cache.
``verify_matches`` reorders a search's matches by verification.
"""

from __future__ import annotations

import functools
import logging
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import Exists, OuterRef

from similarity import priority
from similarity.gallery.images import ImageRejected, open_image
from similarity.geometry import verification
from similarity.models import PhotoFeatures, ReferencePhoto
from similarity.threads import single_threaded_numpy_blas, single_threaded_opencv

logger = logging.getLogger(__name__)

CACHE_ENTRIES = 256  # about 37 MB of features per process at most (codes and points: about 145 kB a photo)
EXPLAIN_MAX_PAIRS = 100  # correspondences returned per verified match (explain=1), spread over all of them


def enabled(mode: str | None = None) -> bool:
    return verification_mode(mode) != "off"


def verification_mode(mode: str | None = None) -> str:
    """SIMILARITY_VERIFY (or a request's ``verify``): all, first or off; off without OpenCV."""
    mode = (mode or settings.SIMILARITY_VERIFY).lower()
    if mode not in ("all", "first", "off"):
        raise ValueError(f"verification must be all, first or off, not {mode!r}")
    return mode if verification.available() else "off"


def storage_name(photo: ReferencePhoto) -> str:
    return f"features/{photo.image.name}.v{verification.FORMAT_VERSION}.npz"


@dataclass
class FeatureReport:
    extracted: int = 0
    failed: list[tuple[int, str]] = field(default_factory=list)


def photos_needing_features():
    """Active photos without features of their present file in the present format."""
    current = PhotoFeatures.objects.filter(
        photo=OuterRef("pk"), source_sha256=OuterRef("sha256"), format_version=verification.FORMAT_VERSION
    )
    return ReferencePhoto.objects.filter(is_active=True).exclude(Exists(current))


def extract_missing(photos: Iterable[ReferencePhoto] | None = None, on_photo=None) -> FeatureReport:
    """Extract and store the features of photos that lack them for their present file (default: all such),
    one photo per core at a time (SIFT releases the GIL)."""
    report = FeatureReport()
    if not verification.available():
        return report
    single_threaded_numpy_blas()  # the descriptors' projection, on the pool's threads: a core each already
    single_threaded_opencv()  # likewise the blurs: before the pool's threads use OpenCV
    queue = photos if photos is not None else photos_needing_features().order_by("pk").iterator(chunk_size=200)
    with ThreadPoolExecutor(verification.WORKERS, thread_name_prefix="features") as pool:
        pending: deque[tuple[ReferencePhoto, Future]] = deque()  # in order, a few per core
        for photo in queue:
            pending.append((photo, pool.submit(_extract_file, photo)))
            while len(pending) > 2 * verification.WORKERS or (pending and pending[0][1].done()):
                photo_done, extraction = pending.popleft()
                _store(photo_done, extraction, report, on_photo)
        while pending:
            photo_done, extraction = pending.popleft()
            _store(photo_done, extraction, report, on_photo)
    return report


def _extract_file(photo: ReferencePhoto) -> tuple[verification.LocalFeatures, bytes]:
    """A photo's features and their file's bytes (on a pool thread: no database here)."""
    with photo.image.open("rb") as handle:
        image = open_image(handle, draft_size=verification.LONG_SIDE)
    found = verification.extract(image)
    return found, found.to_bytes()


def _store(photo: ReferencePhoto, extraction: Future, report: FeatureReport, on_photo) -> None:
    try:
        found, data = extraction.result()
        _save(photo, found, data)
        report.extracted += 1
    except (ImageRejected, OSError, ValueError) as exc:
        logger.warning("No local features for photo %s: %s", photo.pk, exc)
        report.failed.append((photo.pk, str(exc)))
    if on_photo:
        on_photo()


def _save(photo: ReferencePhoto, found: verification.LocalFeatures, data: bytes) -> None:
    name = storage_name(photo)
    default_storage.delete(name)  # a previous extraction of this very file
    saved = default_storage.save(name, ContentFile(data))
    with transaction.atomic():
        previous = PhotoFeatures.objects.select_for_update().filter(photo_id=photo.pk).first()
        stale_file = previous.file if previous is not None and previous.file != saved else None
        PhotoFeatures.objects.update_or_create(
            photo_id=photo.pk,
            defaults={
                "source_sha256": photo.sha256,
                "file": saved,
                "count": len(found),
                "size": len(data),
                "format_version": verification.FORMAT_VERSION,
            },
        )
    if stale_file:  # the features of the file this photo had before, or of an older format
        transaction.on_commit(lambda: default_storage.delete(stale_file), robust=True)


@functools.lru_cache(maxsize=CACHE_ENTRIES)
def _read(file: str, source_sha256: str, frame: tuple[int, int]) -> verification.LocalFeatures:
    """A features file, kept in memory by its name and the photo file's hash (least recently used dropped
    first); a file that cannot be read raises and is not kept. ``frame``: the size features of format 1
    were found at (they do not record it)."""
    with default_storage.open(file, "rb") as handle:
        return verification.LocalFeatures.from_bytes(handle.read(verification.MAX_FILE_BYTES + 1), frame)


def _frame(photo: ReferencePhoto) -> tuple[int, int]:
    """The size a photo is analysed at: its own, its long side brought down to LONG_SIDE."""
    width, height = photo.width or 0, photo.height or 0
    scale = min(1.0, verification.LONG_SIDE / max(width, height, 1))
    return (max(1, round(width * scale)), max(1, round(height * scale))) if width and height else (0, 0)


def forget_cached() -> None:
    """Drop the features this process holds (they are read again from storage on next use)."""
    _read.cache_clear()


def loader(photo_ids: Iterable[int]):
    """A function photo id -> its current features (None when there are none), reading each file once."""
    records = {
        record.photo_id: record
        for record in PhotoFeatures.current()
        .filter(photo_id__in=list(photo_ids))
        .select_related("photo")
        .only("photo_id", "source_sha256", "file", "photo__width", "photo__height")
    }

    def features_of(photo_id: int) -> verification.LocalFeatures | None:
        record = records.get(photo_id)
        if record is None:
            return None
        try:
            return _read(record.file, record.source_sha256, _frame(record.photo))
        except (OSError, ValueError) as exc:
            logger.warning("Unreadable local features of photo %s: %s", photo_id, exc)
            return None

    return features_of


def extract_in_background(image):
    """A future of the image's local features, computed on a verification thread (a low-priority one for
    background work, see similarity/priority.py)."""
    if priority.in_background():
        return verification.threads(background=True).submit(verification.extract, image)
    return verification.threads().submit(verification.extract_in_foreground, image)


def stored_features(photo: ReferencePhoto) -> verification.LocalFeatures | None:
    return loader([photo.pk])(photo.pk)


def verify_matches(matches: list, query: verification.LocalFeatures, mode: str, explain: bool = False) -> list:
    """Matches reordered by verification, each with its inlier count (None where it was not checked), and
    with ``explain`` the verified ones' correspondences (at most EXPLAIN_MAX_PAIRS, as fractions of each
    photo's width and height)."""
    from similarity.search import Match

    minimum = settings.SIMILARITY_VERIFY_MIN_INLIERS
    by_id = {match.photo.pk: match for match in matches}
    order = list(by_id)
    features_of = loader(order)
    found = verification.verify(
        query,
        order,
        features_of,
        min_inliers=minimum,
        stop_at_first=mode == "first",
        background=priority.in_background(),
    )
    counts = {photo_id: len(correspondences.query) for photo_id, correspondences in found.items()}
    verified = []
    for photo_id in verification.promote(order, counts, minimum):
        explanation = None
        if explain and counts.get(photo_id, 0) >= minimum:
            candidate = features_of(photo_id)
            explanation = _explanation(found[photo_id], query.frame, candidate.frame if candidate else (0, 0))
        match = by_id[photo_id]
        verified.append(
            Match(match.photo, match.similarity, counts.get(photo_id), counts.get(photo_id, 0) >= minimum, explanation)
        )
    return verified


def _explanation(found: verification.Correspondences, query_frame, reference_frame):
    """Correspondences as fractions of each frame, at most EXPLAIN_MAX_PAIRS spread over the whole set."""
    from similarity.search import Explanation

    if not all(query_frame) or not all(reference_frame):
        return None
    keep = np.linspace(0, len(found.query) - 1, num=min(len(found.query), EXPLAIN_MAX_PAIRS)).round().astype(int)
    return Explanation(
        query=(found.query[keep] / np.array(query_frame, np.float32)).round(4).tolist(),
        reference=(found.candidate[keep] / np.array(reference_frame, np.float32)).round(4).tolist(),
        total=len(found.query),
    )
