"""The persisted FAISS index: a snapshot of the stored vectors of one encoder.

The database is the source of truth; this module only turns a set of
(photo id, vector) pairs into a FAISS inner-product index on disk, and loads it
back. On disk, in ``SIMILARITY_INDEX_DIR``:

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
import math
import os
import tempfile
import threading
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings

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
    return Path(settings.SIMILARITY_INDEX_DIR)


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


STORAGE_CODES = {"float32": "Flat", "fp16": "SQfp16", "sq8": "SQ8"}  # and "pq": PQ with dim/8 bytes


@dataclass(frozen=True)
class IndexLayout:
    """Which FAISS index to build: exact or inverted lists, and how vectors are stored."""

    kind: str  # "flat" (exact) or "ivf"
    storage: str  # "float32", "fp16", "sq8" or "pq"
    nlist: int = 0
    nprobe: int = 0

    @property
    def name(self) -> str:
        return f"{self.kind}-{self.storage}" if self.kind == "flat" else f"ivf{self.nlist}-{self.storage}"


def choose_layout(count: int, *, kind: str | None = None, storage: str | None = None) -> IndexLayout:
    """Exact search below SIMILARITY_EXACT_LIMIT vectors, inverted lists above (or as configured).

    Storage ``auto`` keeps float32 for exact search and fp16 in inverted lists:
    half the memory, and half the bytes each query scans, which is what IVF
    search time goes on (1M vectors: p50 1.3-1.6 against 1.8-2.1 ms, recall@10 0.999;
    bench/RESULTS.md).
    """
    kind = (kind or settings.SIMILARITY_INDEX_TYPE).lower()
    storage = (storage or settings.SIMILARITY_INDEX_STORAGE).lower()
    if storage not in ("auto", *STORAGE_CODES, "pq"):
        raise ValueError(f"SIMILARITY_INDEX_STORAGE must be auto, float32, fp16, sq8 or pq, not {storage!r}")
    if kind == "auto":
        kind = "flat" if count < settings.SIMILARITY_EXACT_LIMIT else "ivf"
    if kind not in ("flat", "ivf"):
        raise ValueError(f"SIMILARITY_INDEX_TYPE must be auto, flat or ivf, not {kind!r}")
    nlist = int(min(65536, max(16, 4 * math.sqrt(max(count, 1)))))
    if kind == "ivf" and count < nlist:
        kind = "flat"  # too few vectors to train inverted lists; decided before storage, so auto gives float32
    if storage == "auto":
        storage = "fp16" if kind == "ivf" else "float32"
    if kind == "flat":
        return IndexLayout("flat", storage)
    return IndexLayout("ivf", storage, nlist=nlist, nprobe=min(nlist, settings.SIMILARITY_IVF_NPROBE))


def make_faiss_index(dim: int, layout: IndexLayout):
    import faiss

    code = STORAGE_CODES.get(layout.storage) or f"PQ{max(1, dim // 8)}"
    if layout.kind == "flat":
        return faiss.IndexIDMap2(faiss.index_factory(dim, code, faiss.METRIC_INNER_PRODUCT))
    return faiss.index_factory(dim, f"IVF{layout.nlist},{code}", faiss.METRIC_INNER_PRODUCT)


def _train(faiss_index, vectors: np.ndarray) -> None:
    if faiss_index.is_trained:
        return
    if len(vectors) == 0:
        raise ValueError("this index layout needs vectors to train on")
    import faiss

    rng = np.random.default_rng(0)
    sample = vectors if len(vectors) <= 200_000 else vectors[rng.choice(len(vectors), 200_000, replace=False)]
    try:
        faiss.extract_index_ivf(faiss_index).cp.niter = 10  # k-means iterations: plenty for recall, 2.5x faster
    except RuntimeError:
        pass  # not an IVF index (flat PQ)
    faiss_index.train(sample)


def set_search_parameters(faiss_index, nprobe: int) -> None:
    import faiss

    if nprobe:
        faiss.extract_index_ivf(faiss_index).nprobe = nprobe


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
    _train(faiss_index, vectors)
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
    _atomic_write(manifest_path(), lambda temp: Path(temp).write_text(json.dumps(asdict(manifest), indent=2)))
    (index_dir() / BUILD_FAILURE_NAME).unlink(missing_ok=True)
    _remove_old_index_files(keep={file_name, positions_file})
    logger.info("Saved index %s: %d vectors of %s", final, manifest.count, encoder)
    return manifest


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


@dataclass
class SnapshotPositions:
    """Each id's position, as the snapshot was built, sorted by latitude."""

    ids: np.ndarray
    latitudes: np.ndarray
    longitudes: np.ndarray

    @classmethod
    def sorted_by_latitude(cls, ids, latitudes, longitudes) -> "SnapshotPositions":
        order = np.argsort(latitudes, kind="stable")
        return cls(ids[order], latitudes[order], longitudes[order])

    def ids_inside(self, priors) -> np.ndarray:
        """The ids inside every prior: a binary search finds the latitude band, the priors test only it."""
        from similarity.priors import inside_all

        south = max(prior.bounds().south for prior in priors)
        north = min(prior.bounds().north for prior in priors)
        start = int(np.searchsorted(self.latitudes, south, side="left"))
        stop = int(np.searchsorted(self.latitudes, north, side="right"))
        if stop <= start:
            return self.ids[:0]
        band = slice(start, stop)
        return self.ids[band][inside_all(priors, self.latitudes[band], self.longitudes[band])]


@dataclass
class LoadedIndex:
    manifest: IndexManifest
    faiss_index: Any  # a faiss.Index
    positions: SnapshotPositions | None = None

    def search(self, queries: np.ndarray, k: int, *, among: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, ids) per query row; missing slots have id -1.

        ``among``: only these ids are candidates. FAISS filters them inside
        the search (an ID selector), and an IVF layout probes more lists the
        fewer the candidates, so that a selective filter keeps its recall.
        """
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if among is None:
            k = max(1, min(int(k), max(1, self.manifest.count)))
            return self.faiss_index.search(queries, k)
        import faiss

        among = np.ascontiguousarray(among, dtype=np.int64)
        if len(among) == 0:
            return np.full((len(queries), 1), -np.inf, dtype=np.float32), np.full((len(queries), 1), -1, dtype=np.int64)
        k = max(1, min(int(k), len(among)))
        selector, keep_alive = _id_selector(among, self.manifest.count)
        if self.manifest.nlist:
            # The members nearest the query lie in the lists nearest it even when they are a sparse,
            # scattered subset: probing sqrt(1/share) times as many lists kept recall@10 >= 0.996 for a
            # 1 % prior at 1M vectors, where probing every list cost 9-12 ms (bench/RESULTS.md).
            share = len(among) / max(1, self.manifest.count)
            nprobe = min(self.manifest.nlist, math.ceil(self.manifest.nprobe * math.sqrt(1 / share)))
            # faiss's stubs list no keyword arguments; its SWIG constructors take every field as one
            parameters = faiss.SearchParametersIVF(sel=selector, nprobe=nprobe)  # type: ignore[call-arg]
        else:
            parameters = faiss.SearchParameters(sel=selector)  # type: ignore[call-arg,assignment]
        found = self.faiss_index.search(queries, k, params=parameters)
        del keep_alive
        return found


def _id_selector(ids: np.ndarray, count: int):
    """A FAISS ID selector for ``ids`` (and what must outlive it): a bitmap when the ids are compact
    (one bit test per candidate), else a hashed set."""
    import faiss

    largest = int(ids.max())
    if largest < 64 * max(count, 1024):
        bitmap = np.zeros(largest // 8 + 1, dtype=np.uint8)
        np.bitwise_or.at(bitmap, ids >> 3, np.left_shift(1, ids & 7).astype(np.uint8))
        return faiss.IDSelectorBitmap(largest + 1, faiss.swig_ptr(bitmap)), bitmap
    return faiss.IDSelectorBatch(ids), None


def verify_file(manifest: IndexManifest) -> None:
    """Check the file on disk against its manifest's checksum, whatever this process holds in memory."""
    path = manifest.path
    try:
        checksum = _sha256_file(path)
    except OSError as exc:
        raise IndexCorrupt(f"Index file {path} cannot be read: {exc}") from exc
    if checksum != manifest.checksum:
        raise IndexCorrupt(f"Index file {path} does not match its manifest checksum (corrupt or truncated).")


def read_index_file(manifest: IndexManifest) -> LoadedIndex:
    """Load and verify the file a manifest names; raises IndexCorrupt on any mismatch."""
    import faiss

    path = manifest.path
    verify_file(manifest)
    try:
        faiss_index = faiss.read_index(str(path))
    except RuntimeError as exc:
        raise IndexCorrupt(f"Index file {path} cannot be parsed: {exc}") from exc
    set_search_parameters(faiss_index, manifest.nprobe)
    if faiss_index.d != manifest.dim or faiss_index.ntotal != manifest.count:
        raise IndexCorrupt(
            f"Index file {path} holds {faiss_index.ntotal} vectors of dim {faiss_index.d}, "
            f"the manifest says {manifest.count} of dim {manifest.dim}."
        )
    return LoadedIndex(manifest, _on_gpu_if_wanted(faiss_index), _read_positions(manifest))


def _read_positions(manifest: IndexManifest) -> SnapshotPositions | None:
    if not manifest.positions_file:
        return None
    path = index_dir() / manifest.positions_file
    try:
        with np.load(path) as data:
            positions = SnapshotPositions.sorted_by_latitude(data["ids"], data["latitudes"], data["longitudes"])
    except (OSError, ValueError, KeyError) as exc:
        raise IndexCorrupt(f"Positions file {path} cannot be read: {exc}") from exc
    if len(positions.ids) != manifest.count:
        raise IndexCorrupt(f"Positions file {path} holds {len(positions.ids)} positions for {manifest.count} vectors.")
    return positions


def _on_gpu_if_wanted(faiss_index):
    """Move the index to the GPUs when SIMILARITY_DEVICE asks for CUDA and FAISS was built with GPU support."""
    import faiss

    if settings.SIMILARITY_DEVICE.lower() not in ("auto", "cuda"):
        return faiss_index
    if not hasattr(faiss, "index_cpu_to_all_gpus") or faiss.get_num_gpus() == 0:
        return faiss_index  # faiss-cpu, or no GPU: the CPU index
    logger.info("Searching the index on %d GPU(s)", faiss.get_num_gpus())
    return faiss.index_cpu_to_all_gpus(faiss_index)


_loaded: LoadedIndex | None = None
_load_lock = threading.Lock()


def load_index() -> LoadedIndex | None:
    """The current index for this process, reloaded when the manifest changes.

    Returns None when no index was built. Raises IndexCorrupt when the file on
    disk is damaged (callers fall back to exact search over stored vectors).
    """
    global _loaded
    manifest = read_manifest()
    if manifest is None:
        return None
    current = _loaded
    if current is not None and current.manifest.build_id == manifest.build_id:
        return current
    with _load_lock:
        for _ in range(5):
            if _loaded is not None and _loaded.manifest.build_id == manifest.build_id:
                return _loaded
            try:
                _loaded = read_index_file(manifest)
            except IndexCorrupt:
                # A rebuild may have replaced the manifest and removed this file
                # since we read it: follow the new manifest, else it is really broken.
                newer = read_manifest()
                if newer is None or newer.build_id == manifest.build_id:
                    raise
                manifest = newer
                continue
            logger.info("Loaded index %s (%d vectors, %s)", manifest.file, manifest.count, manifest.encoder)
            return _loaded
        raise IndexCorrupt("The index kept changing while it was being loaded; try again.")


def forget_loaded_index() -> None:
    """Drop this process's cached index (tests, or after deleting the data dir)."""
    global _loaded
    with _load_lock:
        _loaded = None
