"""The persisted FAISS index: a snapshot of the stored vectors of one encoder.

The database is the source of truth; this module only turns a set of
(photo id, vector) pairs into a FAISS inner-product index on disk, and loads it
back. On disk, in the index directory (``config.py``):

* ``index-<build id>.faiss`` -- the FAISS index, ids = photo primary keys;
* ``positions-<build id>.npz`` -- each id's latitude and longitude, so that a
  location prior turns into an ID selector inside the FAISS search;
* ``manifest.json`` -- the sentinel saying how the current index was built
  (encoder id, dim, count, index type, built_at, file names, sha256 checksum).

Both are written to a temporary file and renamed into place, and the manifest
is replaced last, so a reader sees either the old index or the new one, never
a partial file. Readers reload when the manifest changes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np

from similarity.index import config
from similarity.index.layout import IndexLayout, choose_layout, make_faiss_index, train

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
BUILD_FAILURE_NAME = "last-build-failure.json"
FORMAT_VERSION = 2  # 2: positions beside the index


class IndexCorrupt(RuntimeError):
    """The index file does not match its manifest."""


@dataclass(frozen=True)
class IndexManifest:
    encoder: str
    dim: int
    count: int
    index_type: str
    built_at: str  # ISO 8601, UTC; vectors stored after this are not in the file
    file: str
    checksum: str  # sha256 of the index file
    build_id: str
    note: str = ""  # why this encoder was chosen, when `auto` fell back
    nprobe: int = 0  # inverted lists searched per query (IVF layouts)
    file_bytes: int = 0
    positions_file: str = ""  # each id's position (format 2)
    nlist: int = 0
    format_version: int = FORMAT_VERSION

    @property
    def bytes_per_vector(self) -> float | None:
        return round(self.file_bytes / self.count, 1) if self.count else None

    @property
    def built_at_datetime(self) -> datetime:
        return datetime.fromisoformat(self.built_at)

    @property
    def path(self) -> Path:
        return index_dir() / self.file


def index_dir() -> Path:
    return Path(config.current().directory)


def manifest_path() -> Path:
    return index_dir() / MANIFEST_NAME


def read_manifest() -> IndexManifest | None:
    """The current manifest, or None when no index has been built (or it is unreadable)."""
    path = manifest_path()
    try:
        data = json.loads(path.read_text())
        return IndexManifest(**data)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as exc:
        logger.error("Ignoring unreadable index manifest %s: %s", path, exc)
        return None


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1024 * 1024), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _atomic_write(path: Path, write) -> None:
    """Write through ``write(temp_path)`` then rename over ``path`` (same directory)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        write(temp_name)
        with open(temp_name, "rb") as temp:
            os.fsync(temp.fileno())
        os.chmod(temp_name, 0o644)  # mkstemp makes 0600: a web server running as another user must read it
        os.replace(temp_name, path)
    except BaseException:
        try:
            os.unlink(temp_name)
        except FileNotFoundError:
            pass
        raise


def save_index(
    ids: np.ndarray,
    vectors: np.ndarray,
    *,
    encoder: str,
    built_at: datetime,
    note: str = "",
    layout: IndexLayout | None = None,
    positions: tuple[np.ndarray, np.ndarray] | None = None,
) -> IndexManifest:
    """Build a FAISS index from unit vectors and make it the current one on disk.

    ``built_at`` must be taken *before* the vectors were read, so that anything
    stored since is treated as newer than the snapshot. ``positions``
    (latitudes, longitudes, in the order of ``ids``) are kept beside it for
    searches with a location prior.
    """
    import faiss

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    if vectors.ndim != 2 or len(ids) != len(vectors):
        raise ValueError(f"expected (n, dim) vectors and n ids, got {vectors.shape} and {ids.shape}")
    dim = int(vectors.shape[1])
    layout = layout or choose_layout(len(ids))
    if layout.kind == "ivf" and len(ids) < layout.nlist:
        layout = IndexLayout("flat", layout.storage)  # a layout made for more vectors than these
    if layout.storage == "pq" and len(ids) < 256:
        layout = IndexLayout(layout.kind, "float32", layout.nlist, layout.nprobe)  # PQ needs >= 256 to train
    faiss_index = make_faiss_index(dim, layout)
    train(faiss_index, vectors)
    if len(ids):
        faiss_index.add_with_ids(vectors, ids)
    build_id = f"{built_at.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
    file_name = f"index-{build_id}.faiss"
    final = index_dir() / file_name
    _atomic_write(final, lambda temp: faiss.write_index(faiss_index, temp))
    positions_file = ""
    if positions is not None:
        latitudes, longitudes = (np.ascontiguousarray(values, dtype=np.float64) for values in positions)
        if latitudes.shape != ids.shape or longitudes.shape != ids.shape:
            raise ValueError(
                f"expected a position per id, got {latitudes.shape} and {longitudes.shape} for {ids.shape}"
            )
        positions_file = f"positions-{build_id}.npz"

        def write_positions(temp):
            with open(temp, "wb") as handle:
                np.savez(handle, ids=ids, latitudes=latitudes, longitudes=longitudes)

        _atomic_write(index_dir() / positions_file, write_positions)
    manifest = IndexManifest(
        encoder=encoder,
        dim=dim,
        count=int(faiss_index.ntotal),
        index_type=layout.name,
        built_at=built_at.isoformat(),
        file=file_name,
        checksum=_sha256_file(final),
        build_id=build_id,
        note=note,
        nprobe=layout.nprobe,
        file_bytes=final.stat().st_size,
        positions_file=positions_file,
        nlist=layout.nlist if layout.kind == "ivf" else 0,
    )
    _make_current(manifest)
    logger.info("Saved index %s: %d vectors of %s", final, manifest.count, encoder)
    return manifest


def manifest_json(manifest: IndexManifest) -> str:
    return json.dumps(asdict(manifest), indent=2)


def manifest_from_json(text: str | bytes) -> IndexManifest:
    """A manifest from its JSON; IndexCorrupt when it is not one."""
    try:
        return IndexManifest(**json.loads(text))
    except (ValueError, TypeError) as exc:
        raise IndexCorrupt(f"Not an index manifest: {exc}") from None


def file_names(manifest: IndexManifest) -> list[str]:
    """The files a snapshot is made of, besides its manifest."""
    return [name for name in (manifest.file, manifest.positions_file) if name]


def adopt(manifest: IndexManifest, write_file: Callable[[str, str], None]) -> None:
    """Make a snapshot built elsewhere the current one here.

    ``write_file(name, temp_path)`` writes each of its files (``file_names``);
    they are checked against the manifest (IndexCorrupt) before it replaces
    the current one, so a reader never sees a partial or damaged copy.
    """
    for name in file_names(manifest):
        _atomic_write(index_dir() / name, lambda temp, name=name: write_file(name, temp))
    try:
        verify_file(manifest)
    except IndexCorrupt:
        current = read_manifest()
        _remove_old_index_files(keep=set(file_names(current)) if current else set())  # the damaged copy goes
        raise
    _make_current(manifest)


def _make_current(manifest: IndexManifest) -> None:
    _atomic_write(manifest_path(), lambda temp: Path(temp).write_text(manifest_json(manifest)))
    (index_dir() / BUILD_FAILURE_NAME).unlink(missing_ok=True)
    _remove_old_index_files(keep=set(file_names(manifest)))


def record_build_failure(exc: BaseException) -> None:
    """Note that a build failed (kept beside the manifest, so every process can report it) until one succeeds."""
    failure = {
        "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "error": f"{type(exc).__name__} while building the index (the worker's log has the details).",
    }
    try:
        _atomic_write(index_dir() / BUILD_FAILURE_NAME, lambda temp: Path(temp).write_text(json.dumps(failure)))
    except OSError as write_error:
        logger.error("Could not record the build failure: %s", write_error)


def last_build_failure() -> dict | None:
    """When the last index build failed and what with, unless a build succeeded since."""
    try:
        return json.loads((index_dir() / BUILD_FAILURE_NAME).read_text())
    except (OSError, ValueError):
        return None


def _remove_old_index_files(keep: set[str]) -> None:
    for path in [*index_dir().glob("index-*.faiss"), *index_dir().glob("positions-*.npz")]:
        if path.name not in keep:
            try:
                path.unlink()
            except OSError as exc:  # e.g. still open on a platform that forbids it
                logger.warning("Could not remove old index file %s: %s", path, exc)


def verify_file(manifest: IndexManifest) -> None:
    """Check the file on disk against its manifest's checksum, whatever this process holds in memory."""
    path = manifest.path
    try:
        checksum = _sha256_file(path)
    except OSError as exc:
        raise IndexCorrupt(f"Index file {path} cannot be read: {exc}") from exc
    if checksum != manifest.checksum:
        raise IndexCorrupt(f"Index file {path} does not match its manifest checksum (corrupt or truncated).")
