"""The index a process searches: read from disk, verified, reloaded when the manifest changes.

:class:`LoadedIndex` answers top-k searches, optionally among a subset of ids
(an ID selector inside FAISS); :class:`SnapshotPositions` finds that subset
for a location prior.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from similarity.index import config
from similarity.index.layout import set_search_parameters
from similarity.index.snapshot import IndexCorrupt, IndexManifest, index_dir, read_manifest, verify_file

logger = logging.getLogger(__name__)


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
        from similarity.geometry.priors import inside_all

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
            # scattered subset: probing sqrt(1/share) times as many lists keeps recall for a selective
            # prior at a fraction of the cost of probing every list (bench/search_scale.py).
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

    if config.current().device.lower() not in ("auto", "cuda"):
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
