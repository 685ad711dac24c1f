"""Keeping the index in step with the stored vectors: rebuilds, when to compact, the periodic maintenance."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np
from django.conf import settings
from django.utils import timezone

from similarity import index
from similarity.index import IndexBuildLock, LockHeld
from similarity.models import EmbeddingStatus, PhotoEmbedding
from similarity.runtime.encoders import Encoder
from similarity.runtime.registry import auto_fallback_note, target_spec
from similarity.search import features, shared_index, vector_store
from similarity.search.embedding import embed_photos, photos_needing_embedding, stored_vectors
from similarity.search.service import delta_counts
from similarity.search.vectors import get_encoder

logger = logging.getLogger(__name__)

UP_TO_DATE, REBUILT, BUILD_RUNNING = "up to date", "rebuilt", "a build is already running"
PUBLISHED = "published for the other hosts"


@dataclass(frozen=True)
class MaintenanceReport:
    """What a maintenance run did: photos embedded, and the index up to date, rebuilt (why) or left to
    a build already running."""

    embedded: int
    index: str
    reason: str = ""
    vectors: int | None = None  # in the rebuilt index

    def as_dict(self) -> dict:
        return asdict(self)


_asked_for: set[tuple[str, str]] = set()


def ask_worker_once(task_name: str, key: str = "", **options) -> None:
    """Queue a maintenance run (``options`` for tasks.maintain_index) on the worker, once per ``task_name`` and
    ``key`` in this process: a lookup that finds a build of the index broken, a host that finds nothing
    published. A broker that is down is logged, never raised: searches go on without the index meanwhile."""
    if (task_name, key) in _asked_for:
        return
    _asked_for.add((task_name, key))
    from django_q.tasks import async_task

    try:
        async_task("similarity.tasks.maintain_index", task_name=task_name, **options)
    except Exception as exc:
        logger.error("Could not queue '%s': %s", task_name, exc)


def rebuild_index(encoder_spec: str | None = None) -> index.IndexManifest:
    """Write a new index snapshot from the stored vectors of an encoder (a failure is recorded for the stats),
    and publish it for the other hosts when the index is shared."""
    try:
        manifest = _rebuild_index(encoder_spec)
    except Exception as exc:
        logger.exception("The index build failed")
        index.record_build_failure(exc)
        raise
    if shared_index.enabled():
        try:
            shared_index.publish(manifest)
        except Exception:  # the next maintenance run publishes it (publish_if_behind)
            logger.exception("Could not publish the index to the media storage")
    return manifest


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


def maintain(verify_index: bool = False) -> MaintenanceReport:
    """Embed photos whose task was lost, then compact the index if due (the scheduled task runs this).

    It works towards the encoder the gallery should be on (registry.target_spec),
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
    if vector_store.uses_milvus():  # Milvus answers: repair its drift; the FAISS snapshot is not searched
        repaired = vector_store.repair(encoder.id, settings.SIMILARITY_MAINTENANCE_BATCH)
        return MaintenanceReport(report.embedded, "milvus", f"{repaired['missing']} missing, {repaired['extra']} extra")
    reason = compaction_reason(encoder, verify_file=verify_index)
    if reason is None:
        if shared_index.enabled() and shared_index.publish_if_behind():
            return MaintenanceReport(report.embedded, PUBLISHED)
        return MaintenanceReport(report.embedded, UP_TO_DATE)
    try:
        with IndexBuildLock():
            manifest = rebuild_index(encoder.id)
    except LockHeld:
        return MaintenanceReport(report.embedded, BUILD_RUNNING, reason)
    logger.info("Compacted the index (%s): %d vectors", reason, manifest.count)
    return MaintenanceReport(report.embedded, REBUILT, reason, manifest.count)
