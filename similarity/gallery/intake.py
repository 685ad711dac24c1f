"""Adding a reference photo: the one path that the admin form, the admin bulk upload, the API and the importer share.

:func:`check_photo` settles what a new photo needs before anything is stored:
the file is an image this service decodes (within the curated pixel limit),
its coordinates are the ones given or else its GPS EXIF, and its bytes are
not in the gallery yet (hashed once; the model reuses the hash). It raises
:class:`Refused` with the reason, and the photo already there for a duplicate.

:func:`add_photo` runs the check (or takes one already made, so a form can
show the reason next to its field) and stores the file and the row together:
when the row cannot be stored the file is removed, so no path leaves an
orphan. The save signal queues the embedding once the transaction commits,
unless the photo brings a vector of the current encoder (a restore).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePath
from typing import Any, Callable

import numpy as np
from django.core.exceptions import ValidationError
from django.db import transaction

from similarity.gallery.images import ImageRejected, read_gps, verify_image
from similarity.models import (
    DuplicatePhoto,
    EmbeddingStatus,
    PhotoEmbedding,
    ReferencePhoto,
    duplicate_reason,
    parse_number,
    sha256_of_file,
    validate_latitude,
    validate_longitude,
)

ADDED, DUPLICATE, REJECTED = "added", "duplicate", "rejected"


class Refused(ValueError):
    """The photo cannot be added: ``field`` is what is wrong (image or coordinates); ``existing`` is the
    gallery's copy when it is a duplicate."""

    def __init__(self, reason: str, field: str = "image", existing: ReferencePhoto | None = None):
        super().__init__(reason)
        self.reason, self.field, self.existing = reason, field, existing


@dataclass(frozen=True)
class Checked:
    """What check_photo settled: the file's hash and where the photo was taken."""

    sha256: str
    latitude: float
    longitude: float
    coordinates_from_exif: bool


@dataclass(frozen=True)
class Intake:
    """What add_photo did: added (``photo`` is new), duplicate (``photo`` is the one already there) or rejected."""

    outcome: str
    photo: ReferencePhoto | None = None
    reason: str = ""
    coordinates_from_exif: bool = False

    @classmethod
    def refused(cls, exc: Refused) -> "Intake":
        return cls(DUPLICATE if exc.existing is not None else REJECTED, exc.existing, exc.reason)


def check_photo(
    file, latitude: Any = None, longitude: Any = None, *, replacing: ReferencePhoto | None = None
) -> Checked:
    """Refused unless ``file`` can be added (or can replace ``replacing``'s file) with these coordinates.

    ``latitude``/``longitude``: numbers or plain decimal strings; both None
    reads them from the photo's GPS EXIF.
    """
    try:
        verify_image(file)
    except ImageRejected as exc:
        raise Refused(str(exc)) from None
    latitude, longitude, from_exif = _coordinates(file, latitude, longitude)
    digest = sha256_of_file(file)
    duplicates = ReferencePhoto.objects.filter(sha256=digest)
    if replacing is not None:
        duplicates = duplicates.exclude(pk=replacing.pk)
    existing = duplicates.first()
    if existing is not None:
        raise Refused(duplicate_reason(existing), existing=existing)
    return Checked(digest, latitude, longitude, from_exif)


def _coordinates(file, latitude: Any, longitude: Any) -> tuple[float, float, bool]:
    if latitude is None and longitude is None:
        position = read_gps(file)
        if position is None:
            raise Refused("No coordinates: none were given and the photo has no usable GPS EXIF.", "coordinates")
        return position.latitude, position.longitude, True
    if latitude is None or longitude is None:
        raise Refused("Give both latitude and longitude, or neither to use the photo's GPS EXIF.", "coordinates")
    try:
        latitude, longitude = parse_number(latitude), parse_number(longitude)
    except (TypeError, ValueError):
        raise Refused(f"The coordinates {latitude!r}, {longitude!r} are not numbers.", "coordinates") from None
    try:
        validate_latitude(latitude)
        validate_longitude(longitude)
    except ValidationError as exc:
        raise Refused(" ".join(exc.messages), "coordinates") from None
    return latitude, longitude, False


def add_photo(
    file,
    *,
    latitude: Any = None,
    longitude: Any = None,
    name: str | None = None,
    photo: ReferencePhoto | None = None,
    checked: Checked | None = None,
    vectors: dict[str, np.ndarray] | None = None,
    current_encoder: str | None = None,
    on_saved: Callable[[ReferencePhoto], None] | None = None,
    **fields: Any,
) -> Intake:
    """Add ``file`` to the gallery as a new reference photo.

    ``photo``: an unsaved photo carrying the other fields (a form's instance);
    else ``fields`` (title, address, source, license, notes, is_active) make one.
    The title defaults to the file name without its extension. ``checked``:
    check_photo's result when the caller already ran it. ``vectors``
    (encoder -> vector, from an export) are stored with the photo; one of
    ``current_encoder`` means nothing needs to be embedded. ``on_saved(photo)``
    runs in the transaction that saves the photo (the review queue marks its
    candidate approved there): if it fails, neither is stored.
    """
    name = name or PurePath(getattr(file, "name", "") or "photo").name
    try:
        checked = checked or check_photo(file, latitude, longitude)
    except Refused as exc:
        return Intake.refused(exc)
    photo = photo if photo is not None else ReferencePhoto()
    for field_name, value in fields.items():
        setattr(photo, field_name, value)
    photo.title = (photo.title or PurePath(name).stem)[:200]
    photo.latitude, photo.longitude, photo.sha256 = checked.latitude, checked.longitude, checked.sha256
    vectors = vectors or {}
    if current_encoder in vectors:
        photo.embedding_status = EmbeddingStatus.READY  # its vector comes with it: nothing to queue
    if hasattr(file, "seek"):
        file.seek(0)
    photo.image.save(name, file, save=False)  # stored first, so the model does not hash it again
    try:
        with transaction.atomic():
            photo.save()
            PhotoEmbedding.objects.bulk_create(
                [
                    PhotoEmbedding(
                        photo=photo,
                        encoder=encoder,
                        dim=len(vector),
                        vector=PhotoEmbedding.pack(vector),
                        source_sha256=checked.sha256,
                    )
                    for encoder, vector in vectors.items()
                ]
            )
            if on_saved is not None:
                on_saved(photo)
    except DuplicatePhoto as exc:  # added meanwhile by someone else
        photo.image.delete(save=False)
        return Intake(DUPLICATE, exc.existing, duplicate_reason(exc.existing))
    except BaseException:
        photo.image.delete(save=False)  # no orphan file when the row could not be stored
        raise
    return Intake(ADDED, photo, coordinates_from_exif=checked.coordinates_from_exif)
