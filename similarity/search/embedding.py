"""Computing the gallery's vectors and storing them, and reading them back for an index build.

Every function here is idempotent: a photo whose file and encoder already
have a vector is skipped. The tasks (``similarity/tasks.py``) and the
management commands call them.
"""

from __future__ import annotations

import logging
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np
from django.db import IntegrityError, transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from similarity.gallery.images import DecoderBusy, ImageRejected, open_image
from similarity.gallery.thumbnails import save_thumbnail_from
from similarity.models import EmbeddingStatus, PhotoEmbedding, ReferencePhoto
from similarity.runtime.encoders import Encoder
from similarity.search import vector_store

logger = logging.getLogger(__name__)


def is_transient(exc: BaseException) -> bool:
    """Whether a failure may pass by itself (storage, database, a busy decoder, a model that did not load)
    as opposed to a file that is not a usable image, which only a curator can fix."""
    return not isinstance(exc, ImageRejected)


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
        vector_store.vectors_stored(encoder.id, [photo.pk for photo in photos])  # Milvus, once committed


def record_failure(photo_id: int, error: str) -> None:
    """Mark the photo failed, with the reason shown to curators."""
    ReferencePhoto.objects.filter(pk=photo_id).update(embedding_status=EmbeddingStatus.FAILED, embedding_error=error)


def embed_photos(
    photos: Iterable[ReferencePhoto],
    encoder: Encoder,
    *,
    batch_size: int = 16,
    on_batch: Callable[[int], None] | None = None,
) -> EmbeddingReport:
    """Embed photos in batches through a three-stage pipeline that keeps the model busy.

    While the model embeds batch k (an ONNX Runtime copy: batches k and k+1,
    cut into calls that run on every core), two threads decode and
    preprocess the next batch and this thread stores the one before. Each
    batch is stored in its own transaction, so an interrupted run keeps what
    it finished and the next run picks up the rest.
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
                record_failure(photo.pk, error)
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


@dataclass
class StoredVectors:
    """Every active photo's current vector for an encoder, with the photo's position."""

    ids: np.ndarray
    vectors: np.ndarray
    latitudes: np.ndarray
    longitudes: np.ndarray


def current_vector_rows(encoder_id: str, photo_ids=None):
    """(photo id, dim, vector bytes, latitude, longitude) of every active photo's current vector (or these
    photos' only), for :func:`vectors_from_rows`."""
    rows = PhotoEmbedding.current(encoder_id)
    if photo_ids is not None:
        rows = rows.filter(photo_id__in=list(photo_ids))
    return rows.values_list("photo_id", "dim", "vector", "photo__latitude", "photo__longitude")


def vectors_from_rows(rows) -> StoredVectors:
    """The vectors and positions of rows from :func:`current_vector_rows`, as arrays."""
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


def stored_vectors(encoder_id: str, *, chunk_size: int = 2000) -> StoredVectors:
    return vectors_from_rows(current_vector_rows(encoder_id).iterator(chunk_size=chunk_size))
