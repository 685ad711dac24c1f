"""Moving a gallery between installations: export in the format import_photos reads, and its vectors.

An export is a folder:

* ``photos/<id><suffix>``: each active photo's file, byte for byte;
* ``manifest.csv``: ``file,latitude,longitude,title,address,source,license,notes``
  (``file`` relative to the CSV), the manifest ``import_photos`` reads;
* ``vectors/<encoder>.npz`` (optional): every stored vector of one encoder,
  keyed by the file's sha256, with the encoder's id inside.

``import_photos OUT --manifest OUT/manifest.csv`` on another installation
restores the gallery; when ``vectors/`` lies beside the manifest, each
photo's vectors are stored with it, so nothing is embedded again.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePath

import numpy as np

from similarity.models import PhotoEmbedding, ReferencePhoto

MANIFEST_NAME = "manifest.csv"
MANIFEST_COLUMNS = ["file", "latitude", "longitude", "title", "address", "source", "license", "notes"]
VECTORS_FOLDER = "vectors"
SHA256 = re.compile(r"[0-9a-f]{64}")


class ExchangeError(ValueError):
    """The export cannot be written, or the vectors read; the message says why."""


@dataclass
class ExportReport:
    photos: int = 0
    vectors: dict[str, int] = field(default_factory=dict)  # encoder -> vectors written


def export_gallery(out: Path, *, with_vectors: bool = False) -> ExportReport:
    """Write the active photos, their manifest and (optionally) their vectors to a new or empty folder."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExchangeError(f"{out} exists and is not an empty folder; choose a new one.")
    (out / "photos").mkdir(parents=True, exist_ok=True)
    report = ExportReport()
    photos = ReferencePhoto.objects.filter(is_active=True).order_by("pk")
    with open(out / MANIFEST_NAME, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(MANIFEST_COLUMNS)
        for photo in photos.iterator(chunk_size=500):
            name = f"photos/{photo.pk}{PurePath(photo.image.name).suffix}"
            with photo.image.open("rb") as source, open(out / name, "wb") as target:
                for chunk in iter(lambda: source.read(1024 * 1024), b""):
                    target.write(chunk)
            writer.writerow(
                [
                    name,
                    repr(photo.latitude),
                    repr(photo.longitude),
                    photo.title,
                    photo.address,
                    photo.source,
                    photo.license,
                    photo.notes,
                ]
            )
            report.photos += 1
    if with_vectors:
        report.vectors = _export_vectors(out / VECTORS_FOLDER)
    return report


def _export_vectors(folder: Path) -> dict[str, int]:
    """Each encoder's current vectors of active photos, one archive per encoder."""
    folder.mkdir()
    written = {}
    encoders = PhotoEmbedding.objects.filter(photo__is_active=True).values_list("encoder", flat=True).distinct()
    for encoder in sorted(encoders):
        rows = PhotoEmbedding.current(encoder).values_list("photo__sha256", "dim", "vector").iterator(chunk_size=2000)
        digests, vectors = [], []
        for digest, dim, blob in rows:
            digests.append(digest)
            vectors.append(np.frombuffer(bytes(blob), dtype=np.float32, count=dim))
        if not vectors:
            continue
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", encoder).strip("-")[:80]
        with open(folder / f"{slug}.npz", "wb") as handle:
            np.savez(handle, encoder=np.array([encoder]), sha256=np.array(digests), vectors=np.vstack(vectors))
        written[encoder] = len(vectors)
    return written


def read_vectors(folder: Path) -> dict[str, dict[str, np.ndarray]]:
    """sha256 -> {encoder: unit vector} from an export's ``vectors/`` folder; ExchangeError when unusable."""
    found: dict[str, dict[str, np.ndarray]] = {}
    for path in sorted(folder.glob("*.npz")):
        try:
            with np.load(path, allow_pickle=False) as archive:
                encoder = str(archive["encoder"][0])
                digests = [str(digest) for digest in archive["sha256"]]
                vectors = np.asarray(archive["vectors"], dtype=np.float32)
        except (OSError, ValueError, KeyError, IndexError) as exc:
            raise ExchangeError(f"Vectors {path.name} cannot be read: {exc}") from None
        if vectors.ndim != 2 or len(vectors) != len(digests) or not np.isfinite(vectors).all():
            raise ExchangeError(f"Vectors {path.name} do not hold one finite vector per photo.")
        if not encoder or len(encoder) > 300 or not all(SHA256.fullmatch(digest) for digest in digests):
            raise ExchangeError(f"Vectors {path.name} name no encoder, or hold a malformed file hash.")
        for digest, vector in zip(digests, vectors):
            found.setdefault(digest, {})[encoder] = vector
    return found
