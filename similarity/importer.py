"""Bulk import of reference photos from a folder, with coordinates from a CSV or GPS EXIF."""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from django.core.exceptions import ValidationError
from django.core.files import File
from django.db import transaction

from similarity.encoders import resolve_spec
from similarity.images import ACCEPTED_EXTENSIONS, ImageRejected, read_gps, verify_image
from similarity.models import (
    DuplicatePhoto,
    EmbeddingStatus,
    PhotoEmbedding,
    ReferencePhoto,
    parse_number,
    validate_latitude,
    validate_longitude,
)

REQUIRED_COLUMNS = {"file", "latitude", "longitude"}


class ManifestError(ValueError):
    """The CSV manifest cannot be used at all (missing file or columns)."""


@dataclass
class ManifestRow:
    latitude: str
    longitude: str
    title: str = ""
    address: str = ""
    source: str = ""
    license: str = ""
    notes: str = ""


@dataclass
class ImportReport:
    imported: list[ReferencePhoto] = field(default_factory=list)
    duplicates: list[tuple[Path, ReferencePhoto]] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def read_manifest_csv(csv_path: Path) -> dict[Path, ManifestRow]:
    """Rows of a manifest keyed by resolved image path (``file`` is relative to the CSV)."""
    try:
        handle = open(csv_path, newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise ManifestError(f"Cannot read manifest {csv_path}: {exc.strerror or exc}") from None
    with handle:
        reader = csv.DictReader(handle)
        columns = set(reader.fieldnames or [])
        missing = REQUIRED_COLUMNS - columns
        if missing:
            raise ManifestError(f"Manifest {csv_path} lacks column(s): {', '.join(sorted(missing))}.")
        rows = {}
        for row in reader:
            path = (csv_path.parent / (row["file"] or "").strip()).resolve()
            rows[path] = ManifestRow(
                latitude=row["latitude"],
                longitude=row["longitude"],
                **{key: (row.get(key) or "").strip() for key in ("title", "address", "source", "license", "notes")},
            )
        return rows


def find_images(root: Path) -> list[Path]:
    if root.is_file():
        return [root.resolve()]
    return sorted(path.resolve() for path in root.rglob("*") if path.is_file() and path.suffix.lower() in ACCEPTED_EXTENSIONS)


def _coordinates(path: Path, row: ManifestRow | None) -> tuple[float, float]:
    """(latitude, longitude) from the manifest row, else GPS EXIF; ValueError says why not."""
    if row is not None:
        try:
            latitude, longitude = parse_number(row.latitude), parse_number(row.longitude)
        except (TypeError, ValueError):
            raise ValueError(f"manifest coordinates {row.latitude!r}, {row.longitude!r} are not numbers") from None
        try:
            validate_latitude(latitude)
            validate_longitude(longitude)
        except ValidationError as exc:
            raise ValueError(" ".join(exc.messages)) from None
        return latitude, longitude
    with open(path, "rb") as handle:
        position = read_gps(handle)
    if position is None:
        raise ValueError("no coordinates (not in the manifest and no usable GPS EXIF)")
    return position.latitude, position.longitude


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1024 * 1024), b""):
            digest.update(chunk)
    return digest.hexdigest()


def import_photos(
    paths: Iterable[Path],
    manifest: dict[Path, ManifestRow] | None = None,
    *,
    vectors: dict[str, dict[str, np.ndarray]] | None = None,
    on_progress: Callable[[], None] | None = None,
) -> ImportReport:
    """Store each image as a reference photo; embedding is queued by the save signal.

    ``vectors`` (sha256 -> {encoder: vector}, from an export) are stored with
    their photo; a photo that has one of the configured encoder is ready at
    once, and nothing is queued for it.
    """
    report = ImportReport()
    manifest = manifest or {}
    vectors = vectors or {}
    current_encoder = resolve_spec() if vectors else None
    for path in paths:
        try:
            _import_one(path, manifest.get(path), report, vectors, current_encoder)
        finally:
            if on_progress:
                on_progress()
    return report


def _import_one(path: Path, row: ManifestRow | None, report: ImportReport, vectors: dict, current_encoder) -> None:
    digest = _sha256(path)
    existing = ReferencePhoto.objects.filter(sha256=digest).first()
    if existing is not None:
        report.duplicates.append((path, existing))
        return
    try:
        latitude, longitude = _coordinates(path, row)
        with open(path, "rb") as handle:
            verify_image(handle)
    except ValueError as exc:  # includes ImageRejected
        report.skipped.append((path, str(exc)))
        return
    photo = ReferencePhoto(
        latitude=latitude,
        longitude=longitude,
        title=(row.title if row and row.title else path.stem)[:200],
        address=(row.address if row else "")[:300],
        source=(row.source if row else "")[:300],
        license=(row.license if row else "")[:200],
        notes=row.notes if row else "",
        sha256=digest,
    )
    stored = vectors.get(digest, {})
    if current_encoder in stored:
        photo.embedding_status = EmbeddingStatus.READY  # its vector comes with it: nothing to queue
    with open(path, "rb") as handle:
        photo.image.save(path.name, File(handle), save=False)
    try:
        with transaction.atomic():
            photo.save()
            PhotoEmbedding.objects.bulk_create([
                PhotoEmbedding(photo=photo, encoder=encoder, dim=len(vector), vector=PhotoEmbedding.pack(vector),
                               source_sha256=digest)
                for encoder, vector in stored.items()
            ])
    except DuplicatePhoto as exc:  # imported meanwhile by another process; the model removed the file
        report.duplicates.append((path, exc.existing))
        return
    except BaseException:
        photo.image.delete(save=False)  # no orphan file when the row could not be stored
        raise
    report.imported.append(photo)


__all__ = ["ImageRejected", "ImportReport", "ManifestError", "find_images", "import_photos", "read_manifest_csv"]
