"""Which store answers vector searches, and keeping a Milvus server in step with the database.

SIMILARITY_VECTOR_BACKEND picks it: ``faiss`` (the default: the FAISS snapshot plus the vectors stored
since, in ``service.py``; nothing to start) or ``milvus`` (``similarity/index/milvus.py``: a Milvus server
at SIMILARITY_MILVUS_URI, shared by every web host and worker). The database stays the source of truth:

* every Milvus hit is checked against the database before it is answered, so a photo deleted,
  deactivated or given a new file is never answered, on any host, from the moment that commits;
* Milvus is searched at Bounded consistency (milliseconds, where a Strong read waits 200 ms), so the
  vectors stored in the last FRESH_SECONDS are also read from the database and searched exactly beside it:
  a photo is found the moment its vector is stored, whether or not Milvus shows it yet;
* the task that stores a vector writes it to Milvus before it ends (after its transaction commits), so the
  photo is found through every host without a rebuild; deletions and deactivations are queued the same way
  (``tasks.sync_vectors``);
* ``build_clip_index`` writes the encoder's collection afresh from the database, and the scheduled
  maintenance repairs drift (vectors missing from Milvus, or there without a current vector in the
  database), a batch per run, its task's result saying what it found; ``/api/stats/`` reports both counts.
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta
from itertools import islice

import numpy as np
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from similarity.geometry import priors as location_priors
from similarity.index.milvus import MilvusSettings, MilvusUnavailable, MilvusVectors
from similarity.models import PhotoEmbedding
from similarity.search.embedding import current_vector_rows, vectors_from_rows

logger = logging.getLogger(__name__)

FAISS, MILVUS = "faiss", "milvus"
FRESH_SECONDS = 30  # Milvus's bounded staleness is 5 s; the rest allows for clocks of different hosts
_clients: dict[MilvusSettings, MilvusVectors] = {}
_clients_lock = threading.Lock()


def uses_milvus() -> bool:
    return settings.SIMILARITY_VECTOR_BACKEND == MILVUS


def milvus() -> MilvusVectors:
    """This process's connection to the configured Milvus server."""
    configured = MilvusSettings(
        uri=settings.SIMILARITY_MILVUS_URI,
        token=settings.SIMILARITY_MILVUS_TOKEN,
        db_name=settings.SIMILARITY_MILVUS_DB,
    )
    with _clients_lock:
        client = _clients.get(configured)
        if client is None:
            client = _clients[configured] = MilvusVectors(configured)
        return client


def _write(encoder_id: str, rows) -> int:
    """Upsert rows of ``current_vector_rows`` into Milvus; how many."""
    stored = vectors_from_rows(rows)
    if len(stored.ids):
        milvus().upsert(encoder_id, stored.ids, stored.vectors, stored.latitudes, stored.longitudes)
    return len(stored.ids)


def milvus_scores(encoder_id: str, query: np.ndarray, wanted: int, skip: set[int], priors=()) -> dict[int, float]:
    """Up to ``wanted`` (photo id, score) pairs from Milvus, each still a current vector of an active photo
    inside every prior in the database; asks Milvus for more while hits fail that check."""
    boxes = [(box.south, box.west, box.north, box.east) for box in (prior.bounds() for prior in priors)]
    fresh = _fresh_scores(encoder_id, query)
    k = wanted + len(skip) + 8
    while True:
        hits = milvus().search(encoder_id, query, k, boxes)
        candidates = {photo_id: score for photo_id, score in [*hits, *fresh.items()] if photo_id not in skip}
        valid = {
            photo_id
            for photo_id, latitude, longitude in PhotoEmbedding.current(encoder_id)
            .filter(photo_id__in=list(candidates))
            .values_list("photo_id", "photo__latitude", "photo__longitude")
            if not priors or location_priors.contains(priors, latitude, longitude)
        }
        scores = {photo_id: score for photo_id, score in candidates.items() if photo_id in valid}
        if len(scores) >= wanted or len(hits) < k or k >= 16384:
            return scores
        k = min(k * 4, 16384)


def _fresh_scores(encoder_id: str, query: np.ndarray) -> dict[int, float]:
    """Inner products with the vectors stored in the last FRESH_SECONDS (those Milvus may not show yet)."""
    since = timezone.now() - timedelta(seconds=FRESH_SECONDS)
    rows = PhotoEmbedding.current(encoder_id).filter(updated__gte=since).values_list("photo_id", "dim", "vector")
    return {
        photo_id: float(np.frombuffer(bytes(blob), dtype=np.float32, count=dim) @ query) for photo_id, dim, blob in rows
    }


def vectors_stored(encoder_id: str, photo_ids: list[int]) -> None:
    """After the transaction that stored these vectors commits, write them to Milvus (the calling task
    ends after that). A Milvus outage is logged: the maintenance writes them later."""
    if not uses_milvus() or not photo_ids:
        return

    def write():
        try:
            sync_photos(photo_ids, encoder_id)
        except MilvusUnavailable as exc:
            logger.error("%s; the maintenance will write the vectors of %d photo(s) later", exc, len(photo_ids))

    transaction.on_commit(write, robust=True)


def sync_photos(photo_ids, encoder_id: str | None = None) -> dict:
    """Milvus as the database has these photos now: current vectors written, others removed."""
    from similarity.search.vectors import get_encoder

    encoder_id = encoder_id or get_encoder().id
    photo_ids = [int(photo_id) for photo_id in photo_ids]
    written = _write(encoder_id, current_vector_rows(encoder_id, photo_ids))
    current = set(PhotoEmbedding.current(encoder_id).filter(photo_id__in=photo_ids).values_list("photo_id", flat=True))
    gone = [photo_id for photo_id in photo_ids if photo_id not in current]
    milvus().delete(encoder_id, gone)
    return {"written": written, "removed": len(gone)}


def rebuild(encoder_id: str, chunk: int = 2000) -> int:
    """The encoder's collection written afresh from the database (indexed once it is all there); its size."""

    def batches():
        rows = current_vector_rows(encoder_id).order_by("photo_id").iterator(chunk_size=chunk)
        while batch := list(islice(rows, chunk)):
            stored = vectors_from_rows(batch)
            yield stored.ids, stored.vectors, stored.latitudes, stored.longitudes

    return milvus().replace_all(encoder_id, batches())


def drift(encoder_id: str) -> tuple[list[int], list[int]]:
    """(photo ids with a current vector that Milvus lacks, ids Milvus holds without one), sorted."""
    in_database = set(PhotoEmbedding.current(encoder_id).values_list("photo_id", flat=True))
    in_milvus = set(milvus().ids(encoder_id))
    return sorted(in_database - in_milvus), sorted(in_milvus - in_database)


def repair(encoder_id: str, limit: int) -> dict:
    """Write up to ``limit`` missing vectors and remove up to ``limit`` extra ones; what was found and done."""
    missing, extra = drift(encoder_id)
    written = _write(encoder_id, current_vector_rows(encoder_id, missing[:limit]))
    milvus().delete(encoder_id, extra[:limit])
    if missing or extra:
        logger.info("Milvus drift repaired: %d vector(s) written, %d removed", written, min(len(extra), limit))
    return {"missing": len(missing), "extra": len(extra), "written": written, "removed": min(len(extra), limit)}


def stats(encoder_id: str) -> dict:
    """What /api/stats/ says of the Milvus backend (an outage is reported, not raised)."""
    in_database = PhotoEmbedding.current(encoder_id).count()
    try:
        in_milvus = milvus().count(encoder_id)
    except MilvusUnavailable as exc:
        logger.error("%s", exc)
        return {"backend": MILVUS, "available": False, "vectors_in_database": in_database}
    return {
        "backend": MILVUS,
        "available": True,
        "vectors": in_milvus,
        "vectors_in_database": in_database,
        "counts_match": in_milvus == in_database,  # which ids differ: drift(), repaired by the maintenance
    }
