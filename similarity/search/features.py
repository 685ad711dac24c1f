"""Local features of reference photos, for verification: kept in step with the photos, cached per process.

Features are extracted once per photo file (``extract_missing``: the embed
task, build_clip_index and the scheduled maintenance call it), stored in the
media storage as ``features/<photo file>.npz`` (about 150 kB for 2,000
keypoints), and recorded with the file hash they came from
(models.PhotoFeatures), so a replaced file's features are extracted again
and a deleted photo's are deleted with it (signals/handlers.py). Lookups
read them through a small per-process cache. ``verify_matches`` reorders a
search's matches by verification.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from typing import Iterable

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import Exists, OuterRef

from similarity import priority
from similarity.gallery.images import ImageRejected, open_image
from similarity.geometry import verification
from similarity.models import PhotoFeatures, ReferencePhoto

logger = logging.getLogger(__name__)

CACHE_ENTRIES = 256  # about 40 MB of features per process at most (about 150 kB a photo)


def enabled(mode: str | None = None) -> bool:
    return verification_mode(mode) != "off"


def verification_mode(mode: str | None = None) -> str:
    """SIMILARITY_VERIFY (or a request's ``verify``): all, first or off; off without OpenCV."""
    mode = (mode or settings.SIMILARITY_VERIFY).lower()
    if mode not in ("all", "first", "off"):
        raise ValueError(f"verification must be all, first or off, not {mode!r}")
    return mode if verification.available() else "off"


def storage_name(photo: ReferencePhoto) -> str:
    return f"features/{photo.image.name}.npz"


@dataclass
class FeatureReport:
    extracted: int = 0
    failed: list[tuple[int, str]] = field(default_factory=list)


def photos_needing_features():
    """Active photos without features of their present file."""
    current = PhotoFeatures.objects.filter(photo=OuterRef("pk"), source_sha256=OuterRef("sha256"))
    return ReferencePhoto.objects.filter(is_active=True).exclude(Exists(current))


def extract_missing(photos: Iterable[ReferencePhoto] | None = None, on_photo=None) -> FeatureReport:
    """Extract and store the features of photos that lack them for their present file (default: all such)."""
    report = FeatureReport()
    if not verification.available():
        return report
    for photo in photos if photos is not None else photos_needing_features().order_by("pk").iterator(chunk_size=200):
        try:
            _extract_one(photo)
            report.extracted += 1
        except (ImageRejected, OSError, ValueError) as exc:
            logger.warning("No local features for photo %s: %s", photo.pk, exc)
            report.failed.append((photo.pk, str(exc)))
        if on_photo:
            on_photo()
    return report


def _extract_one(photo: ReferencePhoto) -> None:
    with photo.image.open("rb") as handle:
        image = open_image(handle, draft_size=verification.LONG_SIDE)
    found = verification.extract(image)
    data = found.to_bytes()
    name = storage_name(photo)
    default_storage.delete(name)  # a previous extraction of this very file
    saved = default_storage.save(name, ContentFile(data))
    with transaction.atomic():
        previous = PhotoFeatures.objects.select_for_update().filter(photo_id=photo.pk).first()
        stale_file = previous.file if previous is not None and previous.file != saved else None
        PhotoFeatures.objects.update_or_create(
            photo_id=photo.pk,
            defaults={"source_sha256": photo.sha256, "file": saved, "count": len(found), "size": len(data)},
        )
    if stale_file:  # the features of the file this photo had before
        transaction.on_commit(lambda: default_storage.delete(stale_file), robust=True)


@functools.lru_cache(maxsize=CACHE_ENTRIES)
def _read(file: str, source_sha256: str) -> verification.LocalFeatures:
    """A features file, kept in memory by its name and the photo file's hash (least recently used dropped
    first); a file that cannot be read raises and is not kept."""
    with default_storage.open(file, "rb") as handle:
        return verification.LocalFeatures.from_bytes(handle.read(verification.MAX_FILE_BYTES + 1))


def forget_cached() -> None:
    """Drop the features this process holds (they are read again from storage on next use)."""
    _read.cache_clear()


def loader(photo_ids: Iterable[int]):
    """A function photo id -> its current features (None when there are none), reading each file once."""
    records = {
        record.photo_id: record
        for record in PhotoFeatures.current()
        .filter(photo_id__in=list(photo_ids))
        .only("photo_id", "source_sha256", "file")
    }

    def features_of(photo_id: int) -> verification.LocalFeatures | None:
        record = records.get(photo_id)
        if record is None:
            return None
        try:
            return _read(record.file, record.source_sha256)
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


def verify_matches(matches: list, query: verification.LocalFeatures, mode: str) -> list:
    """Matches reordered by verification, each with its inlier count (None where it was not checked)."""
    from similarity.search import Match

    minimum = settings.SIMILARITY_VERIFY_MIN_INLIERS
    by_id = {match.photo.pk: match for match in matches}
    order = list(by_id)
    counts = verification.verify(
        query,
        order,
        loader(order),
        min_inliers=minimum,
        stop_at_first=mode == "first",
        background=priority.in_background(),
    )
    return [
        Match(
            by_id[photo_id].photo, by_id[photo_id].similarity, counts.get(photo_id), counts.get(photo_id, 0) >= minimum
        )
        for photo_id in verification.promote(order, counts, minimum)
    ]
