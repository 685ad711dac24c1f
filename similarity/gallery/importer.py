"""Bulk import of reference photos from a folder, with coordinates from a CSV or GPS EXIF.

Only files inside the folder are imported: a link that leads out of it is
refused (:func:`scan_folder` names such links, never where they lead).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from django.core.files import File

from similarity.gallery.exchange import restore_cell
from similarity.gallery.images import ACCEPTED_EXTENSIONS, ImageRejected
from similarity.gallery.intake import ADDED, Intake, Refused, add_photo, check_photo
from similarity.models import ReferencePhoto
from similarity.search.vectors import resolve_spec

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
                **{
                    key: restore_cell((row.get(key) or "").strip())
                    for key in ("title", "address", "source", "license", "notes")
                },
            )
        return rows


def scan_folder(root: Path) -> tuple[list[Path], list[Path]]:
    """The image files under ``root`` (or ``root`` itself if it is one), resolved, and the links under it that
    lead to files outside it, as found there (their targets are not shown)."""
    if root.is_file():
        return [root.resolve()], []
    inside, outside = [], []
    folder = root.resolve()
    for path in sorted(root.rglob("*")):  # links to folders are not followed
        if not (path.is_file() and path.suffix.lower() in ACCEPTED_EXTENSIONS):
            continue
        resolved = path.resolve()
        if resolved.is_relative_to(folder):
            inside.append(resolved)
        else:
            outside.append(path.absolute())
    return inside, outside


def find_images(root: Path) -> list[Path]:
    """The image files under ``root`` (resolved), links to files outside it left out."""
    return scan_folder(root)[0]


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
    latitude = (row.latitude or None) if row else None  # an empty cell: the photo's GPS EXIF
    longitude = (row.longitude or None) if row else None
    with open(path, "rb") as handle:
        file = File(handle, name=path.name)
        try:
            checked = check_photo(file, latitude, longitude)  # first: the vectors are found by its hash
        except Refused as exc:
            added = Intake.refused(exc)
        else:
            added = add_photo(
                file,
                checked=checked,
                title=row.title if row else "",
                address=(row.address if row else "")[:300],
                source=(row.source if row else "")[:300],
                license=(row.license if row else "")[:200],
                notes=row.notes if row else "",
                vectors=vectors.get(checked.sha256, {}),
                current_encoder=current_encoder,
            )
    if added.photo is None:  # rejected
        report.skipped.append((path, added.reason))
    elif added.outcome == ADDED:
        report.imported.append(added.photo)
    else:  # already in the gallery
        report.duplicates.append((path, added.photo))


__all__ = ["ImageRejected", "ImportReport", "ManifestError", "find_images", "import_photos", "read_manifest_csv"]
