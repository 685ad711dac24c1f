"""Which FAISS index to build for a number of vectors, and making one."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from similarity.index import config

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
    search time goes on, with recall kept (bench/search_scale.py; figures in
    bench/RESULTS.md).
    """
    settings = config.current()
    kind = (kind or settings.index_type).lower()
    storage = (storage or settings.storage).lower()
    if storage not in ("auto", *STORAGE_CODES, "pq"):
        raise ValueError(f"SIMILARITY_INDEX_STORAGE must be auto, float32, fp16, sq8 or pq, not {storage!r}")
    if kind == "auto":
        kind = "flat" if count < settings.exact_limit else "ivf"
    if kind not in ("flat", "ivf"):
        raise ValueError(f"SIMILARITY_INDEX_TYPE must be auto, flat or ivf, not {kind!r}")
    nlist = int(min(65536, max(16, 4 * math.sqrt(max(count, 1)))))
    if kind == "ivf" and count < nlist:
        kind = "flat"  # too few vectors to train inverted lists; decided before storage, so auto gives float32
    if storage == "auto":
        storage = "fp16" if kind == "ivf" else "float32"
    if kind == "flat":
        return IndexLayout("flat", storage)
    return IndexLayout("ivf", storage, nlist=nlist, nprobe=min(nlist, settings.ivf_nprobe))


def make_faiss_index(dim: int, layout: IndexLayout):
    import faiss

    code = STORAGE_CODES.get(layout.storage) or f"PQ{max(1, dim // 8)}"
    if layout.kind == "flat":
        return faiss.IndexIDMap2(faiss.index_factory(dim, code, faiss.METRIC_INNER_PRODUCT))
    return faiss.index_factory(dim, f"IVF{layout.nlist},{code}", faiss.METRIC_INNER_PRODUCT)


def train(faiss_index, vectors: np.ndarray) -> None:
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
