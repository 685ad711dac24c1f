"""Background work: embedding photos and rebuilding the index.

Signal handlers and the admin only enqueue these (django-q2); the management
commands call the same functions directly. Every function here is idempotent:
a photo whose file and encoder already have a vector is skipped.
"""

from __future__ import annotations

import logging
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Callable, Iterable

import numpy as np
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone
from django_q.models import Schedule
from django_q.tasks import async_task, schedule

from similarity import index
from similarity.gallery.images import DecoderBusy, ImageRejected, open_image
from similarity.gallery.thumbnails import save_thumbnail_from
from similarity.index import IndexBuildLock, LockHeld
from similarity.models import EmbeddingStatus, PhotoEmbedding, ReferencePhoto
from similarity.runtime.encoders import Encoder
from similarity.runtime.registry import auto_fallback_note, target_spec
from similarity.search import delta_counts, features
from similarity.search.vectors import get_encoder

logger = logging.getLogger(__name__)


@dataclass
class EmbeddingReport:
    embedded: int = 0
    failed: int = 0
    failures: list[tuple[int, str]] = field(default_factory=list)
    # ids whose failure may pass (file storage hiccup), as opposed to a file that is not an image
    retryable: set[int] = field(default_factory=set)


def photos_needing_embedding(encoder_id: str, *, recompute: bool = False):
    """Active photos without a vector for this encoder computed from their current file."""
    photos = ReferencePhoto.objects.filter(is_active=True)
    if recompute:
        return photos
    current_vector = PhotoEmbedding.objects.filter(
        photo=OuterRef("pk"), encoder=encoder_id, source_sha256=OuterRef("sha256")
    )
    return photos.exclude(Exists(current_vector))


def _load_input(encoder: Encoder, photo: ReferencePhoto):
    """Decode and preprocess one stored photo; returns (photo, tensor or None, error, retryable)."""
    try:
        with photo.image.open("rb") as handle:
            image = open_image(handle, draft_size=encoder.draft_size)
        save_thumbnail_from(photo.image.name, image)  # the list and search pages show it
        return photo, encoder.preprocess(image), "", False
    except OSError as exc:  # the message names paths on this server: the log has it, the photo a summary
        logger.warning("Could not read %s: %s", photo.image.name, exc)
        return photo, None, f"Could not read the image file ({exc.strerror or type(exc).__name__}).", is_transient(exc)
    except (ImageRejected, DecoderBusy) as exc:
        return photo, None, str(exc), is_transient(exc)


def _store_vector(encoder: Encoder, photo: ReferencePhoto, vector: np.ndarray) -> None:
    values = {"dim": encoder.dim, "vector": PhotoEmbedding.pack(vector), "source_sha256": photo.sha256}
    try:
        with transaction.atomic():  # a savepoint: another worker may insert the same row first
            PhotoEmbedding.objects.update_or_create(photo=photo, encoder=encoder.id, defaults=values)
    except IntegrityError:
        PhotoEmbedding.objects.filter(photo=photo, encoder=encoder.id).update(updated=timezone.now(), **values)


def _store_vectors(encoder: Encoder, photos: list[ReferencePhoto], vectors: np.ndarray) -> None:
    with transaction.atomic():
        for photo, vector in zip(photos, vectors):
            _store_vector(encoder, photo, vector)
            # only if the file was not replaced meanwhile (then its new vector is still to come)
            ReferencePhoto.objects.filter(pk=photo.pk, sha256=photo.sha256).update(
                embedding_status=EmbeddingStatus.READY, embedding_error=""
            )


def _record_failure(photo_id: int, error: str) -> None:
    ReferencePhoto.objects.filter(pk=photo_id).update(embedding_status=EmbeddingStatus.FAILED, embedding_error=error)


def embed_photos(
    photos: Iterable[ReferencePhoto],
    encoder: Encoder,
    *,
    batch_size: int = 16,
    on_batch: Callable[[int], None] | None = None,
) -> EmbeddingReport:
    """Embed photos in batches through a three-stage pipeline that keeps the model busy.

    While the model embeds batch k (the int8 copy: batches k and k+1, one per
    core), two threads decode and preprocess the next batch and this thread
    stores the one before. Each batch is stored in its own transaction, so an
    interrupted run keeps what it finished and the next run picks up the rest.
    A handful of batches of model inputs are held at most, whatever the size
    of the gallery.
    """
    report = EmbeddingReport()

    def start_embedding(batch: list[ReferencePhoto], loading: list[Future]):
        loaded = [future.result() for future in loading]
        good = [(photo, tensor) for photo, tensor, _, _ in loaded if tensor is not None]
        for photo, tensor, error, retryable in loaded:
            if tensor is None:
                report.failed += 1
                report.failures.append((photo.pk, error))
                if retryable:
                    report.retryable.add(photo.pk)
                _record_failure(photo.pk, error)
                logger.warning("Photo %s not embedded: %s", photo.pk, error)
        vectors = encoder.embed_tensors_async([tensor for _, tensor in good], bulk=True)
        return batch, [photo for photo, _ in good], vectors

    def store(batch: list[ReferencePhoto], good: list[ReferencePhoto], vectors: Future) -> None:
        if good:
            _store_vectors(encoder, good, vectors.result())
            report.embedded += len(good)
        if on_batch:
            on_batch(len(batch))

    encoder.load()
    model_slots = encoder.bulk_parallelism
    decoding: deque = deque()
    embedding: deque = deque()
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="decode") as pool:
        for batch in _chunks(photos, batch_size):
            decoding.append((batch, [pool.submit(_load_input, encoder, photo) for photo in batch]))
            if len(decoding) > 1:  # one batch decodes ahead of the one the model gets next
                embedding.append(start_embedding(*decoding.popleft()))
            if len(embedding) > model_slots:  # the model has the next batch(es) before this one is stored
                store(*embedding.popleft())
        while decoding:
            embedding.append(start_embedding(*decoding.popleft()))
        while embedding:
            store(*embedding.popleft())
    return report


def _chunks(items: Iterable, size: int):
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


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


def is_transient(exc: BaseException) -> bool:
    """Whether a failure may pass by itself (storage, database, a busy decoder, a model that did not load)
    as opposed to a file that is not a usable image, which only a curator can fix."""
    return not isinstance(exc, ImageRejected)


def _after_failure(
    photo_id: int, encoder_spec: str | None, attempt: int, error: str, transient: bool, recompute: bool = False
) -> str:
    """Record the failure on the photo and queue the next attempt if one is due; what happened, in words."""
    _record_failure(photo_id, error)
    if not transient:
        return f"failed: {error}"
    if attempt >= settings.SIMILARITY_EMBED_MAX_ATTEMPTS:
        logger.error("Photo %s failed %d times, giving up until re-embedded by hand: %s", photo_id, attempt, error)
        return f"failed (attempt {attempt}, giving up): {error}"
    delay = retry_delay(attempt)
    enqueue_embedding(
        photo_id, encoder_spec=encoder_spec, attempt=attempt + 1, recompute=recompute, delay_seconds=delay
    )
    return f"failed (attempt {attempt}), retrying in {delay}s: {error}"


def embed_photo(photo_id: int, encoder_spec: str | None = None, attempt: int = 1, recompute: bool = False) -> str:
    """Task: embed one photo (a no-op when its vector is current, unless ``recompute``).

    A photo's vector is replaced only once the new one exists: a failed
    recompute leaves the photo searchable with the vector it had. Retries
    are this function's alone: a failure is recorded on the photo and, when
    transient, the next attempt is scheduled with backoff, up to
    SIMILARITY_EMBED_MAX_ATTEMPTS runs in all. An unexpected error is raised
    as well, so the queue lists the failed task, but the queue acknowledges
    failures (Q_CLUSTER ack_failures) and never runs the same attempt again.
    """
    try:
        encoder = get_encoder(encoder_spec)
        photo = photos_needing_embedding(encoder.id, recompute=recompute).filter(pk=photo_id).first()
        if photo is None:
            return "up to date"
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
        return "embedded"
    error = report.failures[0][1]
    return _after_failure(photo_id, encoder_spec, attempt, error, photo_id in report.retryable, recompute)


def extract_photo_features(photo_id: int) -> str:
    """Task: local features for a photo that arrived with its vector (a restore), so nothing embeds it."""
    if not features.enabled():
        return "verification is off"
    photo = features.photos_needing_features().filter(pk=photo_id).first()
    if photo is None:
        return "nothing to do"
    report = features.extract_missing([photo])
    return f"failed: {report.failed[0][1]}" if report.failed else "extracted"


@dataclass
class StoredVectors:
    """Every active photo's current vector for an encoder, with the photo's position."""

    ids: np.ndarray
    vectors: np.ndarray
    latitudes: np.ndarray
    longitudes: np.ndarray


def stored_vectors(encoder_id: str, *, chunk_size: int = 2000) -> StoredVectors:
    rows = (
        PhotoEmbedding.current(encoder_id)
        .values_list("photo_id", "dim", "vector", "photo__latitude", "photo__longitude")
        .iterator(chunk_size=chunk_size)
    )
    ids, vectors, latitudes, longitudes = [], [], [], []
    for photo_id, dim, blob, latitude, longitude in rows:
        ids.append(photo_id)
        vectors.append(np.frombuffer(bytes(blob), dtype=np.float32, count=dim))
        latitudes.append(latitude)
        longitudes.append(longitude)
    return StoredVectors(
        np.asarray(ids, dtype=np.int64),
        np.vstack(vectors) if vectors else np.zeros((0, 0), dtype=np.float32),
        np.asarray(latitudes, dtype=np.float64),
        np.asarray(longitudes, dtype=np.float64),
    )


def rebuild_index(encoder_spec: str | None = None) -> index.IndexManifest:
    """Task: write a new index snapshot from the stored vectors of an encoder (a failure is recorded for the stats)."""
    try:
        return _rebuild_index(encoder_spec)
    except Exception as exc:
        logger.exception("The index build failed")
        index.record_build_failure(exc)
        raise


def _rebuild_index(encoder_spec: str | None) -> index.IndexManifest:
    encoder = get_encoder(encoder_spec)
    built_at = timezone.now()  # before reading: later vectors belong to the delta
    stored = stored_vectors(encoder.id)
    vectors = stored.vectors if stored.vectors.size else np.zeros((0, encoder.dim), dtype=np.float32)
    previous = index.read_manifest()
    note = auto_fallback_note() or (previous.note if previous and previous.encoder == encoder.id else "")
    return index.save_index(
        stored.ids,
        vectors,
        encoder=encoder.id,
        built_at=built_at,
        note=note,
        positions=(stored.latitudes, stored.longitudes),
    )


def compaction_reason(encoder: Encoder, *, verify_file: bool = False) -> str | None:
    """Why the snapshot should be rebuilt now, or None while the delta is small and young.

    ``verify_file`` checks the file on disk even when this process holds the
    build in memory: asked for when a reader found the file damaged.
    """
    manifest = index.read_manifest()
    vectors = PhotoEmbedding.current(encoder.id)
    if manifest is None:
        return "no index yet" if vectors.exists() else None
    if manifest.encoder != encoder.id:
        if photos_needing_embedding(encoder.id).exclude(embedding_status=EmbeddingStatus.FAILED).exists():
            return None  # switch once the new encoder's vectors are all there
        return f"encoder changed from {manifest.encoder} to {encoder.id}"
    if manifest.format_version < index.FORMAT_VERSION:
        return f"index built by an older version (format {manifest.format_version})"
    try:
        index.load_index()
        if verify_file:
            index.verify_file(manifest)
    except index.IndexCorrupt as exc:
        return f"index unusable ({exc})"
    added, removed = delta_counts(manifest)
    if max(added, removed) >= settings.SIMILARITY_COMPACT_DELTA_SIZE:
        return f"{added} vector(s) added and {removed} removed since the build"
    age = (timezone.now() - manifest.built_at_datetime).total_seconds()
    if (added or removed) and age >= settings.SIMILARITY_COMPACT_MAX_AGE_SECONDS:
        return f"{added} added / {removed} removed, index {age:.0f}s old"
    return None


def maintain_index(verify_index: bool = False) -> str:
    """Scheduled task: embed photos whose task was lost, then compact the index if due.

    It works towards the encoder the gallery should be on (encoders.target_spec),
    so after an encoder change, or a new default for ``auto``, the vectors
    are computed a batch per run and the index switches once they are all
    there. ``verify_index``: a reader found the index file damaged; check the
    file itself, not the copy this worker may have loaded before the damage.
    """
    encoder = get_encoder(target_spec())
    lost = (
        photos_needing_embedding(encoder.id)
        .exclude(embedding_status=EmbeddingStatus.FAILED)
        .order_by("pk")[: settings.SIMILARITY_MAINTENANCE_BATCH]
    )
    report = embed_photos(list(lost), encoder, batch_size=settings.SIMILARITY_BATCH_SIZE)
    if features.enabled():
        features.extract_missing(
            list(features.photos_needing_features().order_by("pk")[: settings.SIMILARITY_MAINTENANCE_BATCH])
        )
    reason = compaction_reason(encoder, verify_file=verify_index)
    if reason is None:
        return f"embedded {report.embedded}; index up to date"
    try:
        with IndexBuildLock():
            manifest = rebuild_index(encoder.id)
    except LockHeld:
        return f"embedded {report.embedded}; a build is already running"
    logger.info("Compacted the index (%s): %d vectors", reason, manifest.count)
    return f"embedded {report.embedded}; rebuilt index ({reason})"
