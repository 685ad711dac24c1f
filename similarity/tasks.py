"""Background work: embedding photos and rebuilding the index.

Signal handlers and the admin only enqueue these (django-q2); the management
commands call the same functions directly. Every function here is idempotent:
a photo whose file and encoder already have a vector is skipped.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np
from django.db import transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from similarity import index
from similarity.encoders import Encoder, auto_fallback_note, get_encoder
from similarity.images import ImageRejected, open_image
from similarity.models import EmbeddingStatus, PhotoEmbedding, ReferencePhoto

logger = logging.getLogger(__name__)


@dataclass
class EmbeddingReport:
    embedded: int = 0
    failed: int = 0
    failures: list[tuple[int, str]] = field(default_factory=list)


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
    """Decode and preprocess one stored photo; returns (photo, tensor or None, error)."""
    try:
        with photo.image.open("rb") as handle:
            image = open_image(handle, draft_size=encoder.draft_size)
        return photo, encoder.preprocess(image), ""
    except ImageRejected as exc:
        return photo, None, str(exc)
    except (OSError, ValueError) as exc:
        return photo, None, f"Could not read {photo.image.name}: {exc}"


def _store_vectors(encoder: Encoder, photos: list[ReferencePhoto], vectors: np.ndarray) -> None:
    with transaction.atomic():
        for photo, vector in zip(photos, vectors):
            PhotoEmbedding.objects.update_or_create(
                photo=photo,
                encoder=encoder.id,
                defaults={"dim": encoder.dim, "vector": PhotoEmbedding.pack(vector), "source_sha256": photo.sha256},
            )
        ReferencePhoto.objects.filter(pk__in=[photo.pk for photo in photos]).update(
            embedding_status=EmbeddingStatus.READY, embedding_error=""
        )


def _record_failure(photo: ReferencePhoto, error: str) -> None:
    ReferencePhoto.objects.filter(pk=photo.pk).update(embedding_status=EmbeddingStatus.FAILED, embedding_error=error)


def embed_photos(
    photos: Iterable[ReferencePhoto],
    encoder: Encoder,
    *,
    batch_size: int = 16,
    on_batch: Callable[[int], None] | None = None,
) -> EmbeddingReport:
    """Embed photos in batches; decoding overlaps with inference on a thread pool.

    Each batch is stored in its own transaction, so an interrupted run keeps
    what it finished and the next run picks up the rest.
    """
    report = EmbeddingReport()
    batch: list[ReferencePhoto] = []

    def flush(pool: ThreadPoolExecutor):
        loaded = list(pool.map(lambda photo: _load_input(encoder, photo), batch))
        good = [(photo, tensor) for photo, tensor, _ in loaded if tensor is not None]
        for photo, tensor, error in loaded:
            if tensor is None:
                report.failed += 1
                report.failures.append((photo.pk, error))
                _record_failure(photo, error)
                logger.warning("Photo %s not embedded: %s", photo.pk, error)
        if good:
            vectors = encoder.embed_tensors([tensor for _, tensor in good])
            _store_vectors(encoder, [photo for photo, _ in good], vectors)
            report.embedded += len(good)
        if on_batch:
            on_batch(len(batch))
        batch.clear()

    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="decode") as pool:
        for photo in photos:
            batch.append(photo)
            if len(batch) >= batch_size:
                flush(pool)
        if batch:
            flush(pool)
    return report


def embed_photo(photo_id: int, encoder_spec: str | None = None) -> str:
    """Task: embed one photo with the configured encoder (no-op when already current)."""
    encoder = get_encoder(encoder_spec)
    photo = photos_needing_embedding(encoder.id).filter(pk=photo_id).first()
    if photo is None:
        return "up to date"
    report = embed_photos([photo], encoder, batch_size=1)
    if report.failed:
        return f"failed: {report.failures[0][1]}"
    return "embedded"


def stored_vectors(encoder_id: str, *, chunk_size: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """(ids, vectors) of every active photo's current vector for an encoder."""
    rows = (
        PhotoEmbedding.objects.filter(encoder=encoder_id, photo__is_active=True)
        .values_list("photo_id", "dim", "vector")
        .iterator(chunk_size=chunk_size)
    )
    ids, vectors = [], []
    for photo_id, dim, blob in rows:
        ids.append(photo_id)
        vectors.append(np.frombuffer(bytes(blob), dtype=np.float32, count=dim))
    if not vectors:
        return np.zeros((0,), dtype=np.int64), np.zeros((0, 0), dtype=np.float32)
    return np.asarray(ids, dtype=np.int64), np.vstack(vectors)


def rebuild_index(encoder_spec: str | None = None) -> index.IndexManifest:
    """Task: write a new index snapshot from the stored vectors of an encoder."""
    encoder = get_encoder(encoder_spec)
    built_at = timezone.now()  # before reading: later vectors belong to the delta
    ids, vectors = stored_vectors(encoder.id)
    if vectors.size == 0:
        vectors = np.zeros((0, encoder.dim), dtype=np.float32)
    previous = index.read_manifest()
    note = auto_fallback_note() or (previous.note if previous and previous.encoder == encoder.id else "")
    return index.save_index(ids, vectors, encoder=encoder.id, built_at=built_at, note=note or "")
