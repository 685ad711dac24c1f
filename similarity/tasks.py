"""The background tasks (django-q2) and the one retry policy for embeddings.

Signal handlers and the admin only enqueue these; each task is a thin call
into ``similarity.search`` (``embedding.py``, ``maintenance.py``) and returns a
dict saying what happened, which django-q2 keeps with the task. The dotted
paths ``similarity.tasks.*`` are stored in queued tasks and schedules: keep them.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.utils import timezone
from django_q.models import Schedule
from django_q.tasks import async_task, schedule

from similarity import batches
from similarity.search import features, maintenance, vector_store
from similarity.search.embedding import embed_photos, is_transient, photos_needing_embedding, record_failure
from similarity.search.vectors import get_encoder

logger = logging.getLogger(__name__)

EMBEDDED, UP_TO_DATE, FAILED = "embedded", "up to date", "failed"


def retry_delay(attempt: int) -> int:
    """Seconds before attempt ``attempt + 1``: base, 4x base, 16x base..."""
    return settings.SIMILARITY_EMBED_RETRY_SECONDS * 4 ** (attempt - 1)


def enqueue_embedding(
    photo_id: int, *, encoder_spec: str | None = None, attempt: int = 1, recompute: bool = False, delay_seconds: int = 0
) -> None:
    """The one way an embedding is queued: now (a saved photo, the admin's re-embed) or later (a retry)."""
    args = (photo_id, encoder_spec, attempt, recompute)
    if delay_seconds <= 0:
        async_task("similarity.tasks.embed_photo", *args, task_name=f"embed photo {photo_id}")
        return
    schedule(
        "similarity.tasks.embed_photo",
        *args,
        schedule_type=Schedule.ONCE,
        next_run=timezone.now() + timedelta(seconds=delay_seconds),
    )


def enqueue_vector_sync(photo_ids: list[int]) -> None:
    """Queue bringing Milvus in step with these photos (deleted, deactivated, moved, restored with a vector)."""
    async_task("similarity.tasks.sync_vectors", list(photo_ids), task_name=f"vectors of photos {photo_ids[:5]}")


def sync_vectors(photo_ids: list[int]) -> dict:
    """Milvus as the database has these photos now (search/vector_store.py); nothing on the FAISS backend,
    whose searches read the database's changes themselves."""
    if not vector_store.uses_milvus():
        return {"photos": photo_ids, "outcome": "faiss: nothing to do"}
    return {"photos": photo_ids, **vector_store.sync_photos(photo_ids)}


def enqueue_features(photo_id: int) -> None:
    """Queue the local features of a photo that arrived with its vector (nothing embeds it)."""
    async_task("similarity.tasks.extract_photo_features", photo_id, task_name=f"features of photo {photo_id}")


def _after_failure(
    photo_id: int, encoder_spec: str | None, attempt: int, error: str, transient: bool, recompute: bool = False
) -> dict:
    """Record the failure on the photo and queue the next attempt if one is due; what happened."""
    record_failure(photo_id, error)
    result = {"photo": photo_id, "outcome": FAILED, "error": error, "attempt": attempt, "retry_in_seconds": None}
    if not transient:
        return result
    if attempt >= settings.SIMILARITY_EMBED_MAX_ATTEMPTS:
        logger.error("Photo %s failed %d times, giving up until re-embedded by hand: %s", photo_id, attempt, error)
        return result
    delay = retry_delay(attempt)
    enqueue_embedding(
        photo_id, encoder_spec=encoder_spec, attempt=attempt + 1, recompute=recompute, delay_seconds=delay
    )
    return {**result, "retry_in_seconds": delay}


def embed_photo(photo_id: int, encoder_spec: str | None = None, attempt: int = 1, recompute: bool = False) -> dict:
    """Task: embed one photo (a no-op when its vector is current, unless ``recompute``).

    A photo's vector is replaced only once the new one exists: a failed
    recompute leaves the photo searchable with the vector it had. Retries
    are this function's alone: a failure is recorded on the photo and, when
    transient, the next attempt is scheduled with backoff, up to
    SIMILARITY_EMBED_MAX_ATTEMPTS runs in all (``retry_in_seconds`` is None
    when none follows). An unexpected error is raised as well, so the queue
    lists the failed task, but the queue acknowledges failures (Q_CLUSTER
    ack_failures) and never runs the same attempt again.
    """
    try:
        encoder = get_encoder(encoder_spec)
        photo = photos_needing_embedding(encoder.id, recompute=recompute).filter(pk=photo_id).first()
        if photo is None:
            return {"photo": photo_id, "outcome": UP_TO_DATE}
        report = embed_photos([photo], encoder, batch_size=1)
    except Exception as exc:
        logger.exception(
            "Embedding photo %s failed (attempt %d of %d)", photo_id, attempt, settings.SIMILARITY_EMBED_MAX_ATTEMPTS
        )
        error = f"{type(exc).__name__} while embedding (the worker's log has the details)."
        _after_failure(photo_id, encoder_spec, attempt, error, is_transient(exc), recompute)
        raise
    if not report.failed:
        if features.enabled():  # for geometric verification: extracted once per file, beside the vector
            features.extract_missing([photo])
        return {"photo": photo_id, "outcome": EMBEDDED}
    error = report.failures[0][1]
    return _after_failure(photo_id, encoder_spec, attempt, error, photo_id in report.retryable, recompute)


def extract_photo_features(photo_id: int) -> dict:
    """Task: local features for a photo that arrived with its vector (a restore), so nothing embeds it."""
    if not features.enabled():
        return {"photo": photo_id, "outcome": "verification is off"}
    photo = features.photos_needing_features().filter(pk=photo_id).first()
    if photo is None:
        return {"photo": photo_id, "outcome": UP_TO_DATE}
    report = features.extract_missing([photo])
    if report.failed:
        return {"photo": photo_id, "outcome": FAILED, "error": report.failed[0][1]}
    return {"photo": photo_id, "outcome": "extracted"}


def maintain_index(verify_index: bool = False) -> dict:
    """Scheduled task (every minute): embed photos whose task was lost, compact the index when due.

    ``verify_index``: a reader found the index file damaged (search.service queues this).
    """
    return maintenance.maintain(verify_index).as_dict()


def locate_batch(batch_id: str) -> dict:
    """Locate a batch's photos not yet located (similarity/batches.py); it queues itself again after a time slice."""
    return batches.locate_pending(batch_id)
