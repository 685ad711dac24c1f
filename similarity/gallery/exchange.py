"""Moving a gallery between installations: export in the format import_photos reads, and its vectors.

An export is a folder:

* ``photos/<id><suffix>``: each active photo's file, byte for byte;
* ``manifest.csv``: ``file,latitude,longitude,title,address,source,license,notes``
  (``file`` relative to the CSV), the manifest ``import_photos`` reads;
* ``vectors/<encoder>.npz`` (optional): every stored vector of one encoder,
  keyed by the file's sha256, with the encoder's id inside.

``import_photos OUT --manifest OUT/manifest.csv`` on another installation
restores the gallery. An export may come from anywhere, so its vectors are
not trusted: :func:`read_vectors` refuses an archive whose vectors are not
finite unit vectors of one dimension, and by default the photos are embedded
afresh wherever the encoder can be loaded (a vector decides what every
lookup answers: one planted vector can make a photo the answer to all of
them). ``--trust-vectors`` stores them, so nothing is embedded again, once
:func:`check_sample` has found a sample of them equal to fresh embeddings of
the same images.

Text cells that a spreadsheet would run as a formula (starting with ``=``,
``+``, ``-``, ``@``, a tab or a carriage return) are written with a leading
``'``, which :func:`restore_cell` removes on import.
"""

from __future__ import annotations

import csv
import hashlib
import random
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Iterable

import numpy as np

from similarity.models import PhotoEmbedding, ReferencePhoto

MANIFEST_NAME = "manifest.csv"
MANIFEST_COLUMNS = ["file", "latitude", "longitude", "title", "address", "source", "license", "notes"]
VECTORS_FOLDER = "vectors"
SHA256 = re.compile(r"[0-9a-f]{64}")
NORM_TOLERANCE = 1e-3  # stored vectors are unit vectors in float32
MAX_DIMENSION = 8192
SAMPLE_SIZE = 16  # vectors --trust-vectors compares with fresh embeddings
MIN_SAMPLE_COSINE = 0.99  # runtimes differ by less than 0.001 (SIMILARITY_RUNTIME_MIN_COSINE)
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralize_cell(text: str) -> str:
    """A text cell a spreadsheet shows as text: one that would start a formula gets a leading apostrophe."""
    return "'" + text if text.startswith(FORMULA_STARTS) or text.startswith("'") else text


def restore_cell(text: str) -> str:
    """The text :func:`neutralize_cell` wrote: the apostrophe it put before a formula's start (or before another
    apostrophe) is removed; any other text, e.g. 's-Hertogenbosch, is kept as it is."""
    return text[1:] if text.startswith("'") and text[1:].startswith((*FORMULA_STARTS, "'")) else text


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
            texts = [photo.title, photo.address, photo.source, photo.license, photo.notes]
            writer.writerow([name, repr(photo.latitude), repr(photo.longitude), *map(neutralize_cell, texts)])
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
        if not 1 <= vectors.shape[1] <= MAX_DIMENSION:
            raise ExchangeError(f"Vectors {path.name} have {vectors.shape[1]} dimensions; no encoder has that many.")
        norms = np.linalg.norm(vectors.astype(np.float64), axis=1)
        off = np.flatnonzero(np.abs(norms - 1) > NORM_TOLERANCE)
        if len(off):
            raise ExchangeError(
                f"Vectors {path.name}: the vector of file {digests[off[0]][:12]}... has length {norms[off[0]]:.4g}, "
                "not 1; stored vectors are unit vectors (remove vectors/ to import the photos without them)."
            )
        for digest, vector in zip(digests, vectors):
            if encoder in found.get(digest, {}):
                raise ExchangeError(f"Vectors {path.name} hold file {digest[:12]}... twice for {encoder}.")
            found.setdefault(digest, {})[encoder] = vector
    return found


def check_sample(
    vectors: dict[str, dict[str, np.ndarray]], images: Iterable[Path], encoder, sample: int = SAMPLE_SIZE
) -> int:
    """Compare up to ``sample`` of ``encoder``'s imported vectors, picked at random, with fresh embeddings of
    the same images; ExchangeError names the first that disagrees (cosine below MIN_SAMPLE_COSINE) or a
    vector of the wrong dimension. Returns how many were compared."""
    from similarity.gallery.images import ImageRejected, open_image

    paths = list(images)
    random.SystemRandom().shuffle(paths)  # the exporter cannot know which ones are compared
    compared = 0
    for path in paths:
        if compared >= sample:
            break
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        imported = vectors.get(digest, {}).get(encoder.id)
        if imported is None:
            continue
        if len(imported) != encoder.dim:
            raise ExchangeError(
                f"The vectors of {encoder.id} have {len(imported)} dimensions; the encoder makes {encoder.dim}."
            )
        try:
            with open(path, "rb") as handle:
                fresh = encoder.embed_images([open_image(handle, draft_size=encoder.draft_size)])[0]
        except (ImageRejected, OSError):
            continue  # the import reports the file itself
        cosine = float(np.dot(fresh, imported))
        if cosine < MIN_SAMPLE_COSINE:
            raise ExchangeError(
                f"The imported {encoder.id} vector of {path.name} does not match its image (cosine {cosine:.3f} "
                f"to a fresh embedding, below {MIN_SAMPLE_COSINE}); nothing was imported."
            )
        compared += 1
    return compared
