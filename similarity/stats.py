"""Gallery and index statistics, as shown by /api/stats/ and the admin.

Counting a large gallery takes its database a while (every photo, vector and
features record is read: 1.5 s at a million photos on 2 cores, bench/stats_scale.py), and the statistics
are public, so :func:`cached_gallery_stats` computes them at most once per
SIMILARITY_STATS_CACHE_SECONDS per process; the threads that ask meanwhile
wait for that one computation and share it.
"""

import threading
import time
from typing import Any

from django.conf import settings
from django.db.models import Avg, Count, Q, Sum
from django.utils import timezone

from similarity import index
from similarity.geometry.verification import FORMAT_VERSION
from similarity.models import EmbeddingStatus, PhotoEmbedding, PhotoFeatures, ReferencePhoto
from similarity.runtime.encoders import public_spec
from similarity.runtime.registry import auto_fallback_note
from similarity.runtime.variants import select_device
from similarity.search import delta_counts, features, vector_store
from similarity.search.vectors import get_encoder


def gallery_stats() -> dict:
    photos = ReferencePhoto.objects.aggregate(
        total=Count("pk"),
        active=Count("pk", filter=Q(is_active=True)),
        embedded=Count("pk", filter=Q(is_active=True, embedding_status=EmbeddingStatus.READY)),
        pending=Count("pk", filter=Q(is_active=True, embedding_status=EmbeddingStatus.PENDING)),
        failed=Count("pk", filter=Q(is_active=True, embedding_status=EmbeddingStatus.FAILED)),
    )
    encoder = get_encoder()
    device = encoder.device if encoder.is_loaded else select_device(settings.SIMILARITY_DEVICE)
    manifest = index.read_manifest()
    index_stats: dict[str, Any] = {
        "size": 0,
        "file": None,
        "built_at": None,
        "age_seconds": None,
        "type": None,
        "corrupt": False,
        "last_build_error": index.last_build_failure(),
    }
    delta = PhotoEmbedding.current(encoder.id).count()
    stale = True
    if manifest is not None:
        built_at = manifest.built_at_datetime
        delta, removed = delta_counts(manifest)
        index_stats.update(
            size=manifest.count,
            file=manifest.file,  # its name: the data dir's path is nobody's business
            built_at=manifest.built_at,
            age_seconds=round((timezone.now() - built_at).total_seconds(), 1),
            type=manifest.index_type,
            encoder=public_spec(manifest.encoder),
            nprobe=manifest.nprobe,
            file_bytes=manifest.file_bytes,
            bytes_per_image=manifest.bytes_per_vector,
        )
        try:
            index.load_index()
        except index.IndexCorrupt:
            index_stats["corrupt"] = True
        stale = (
            manifest.encoder != encoder.id
            or index_stats["corrupt"]
            or delta > 0
            or removed != 0
            or photos["pending"] > 0
        )
    return {
        "photos": photos,
        "encoder": encoder.public_id,
        "encoder_note": auto_fallback_note()
        or (manifest.note if manifest and manifest.encoder == encoder.id else None),
        "dimension": encoder.dim,
        "device": device,
        # known once this process has loaded the model (servers do at start)
        "model_loaded": encoder.is_loaded,
        "precision": encoder.precision if encoder.is_loaded else None,
        "runtime": encoder.runtime if encoder.is_loaded else None,
        "runtime_variant": encoder.runtime_variant if encoder.is_loaded else None,
        "runtime_note": encoder.runtime_note,
        "runtime_candidates": (encoder.runtime_report() or {}).get("candidates"),
        "default_threshold": encoder.default_threshold,
        "supports_text": encoder.supports_text,
        "index": index_stats,
        "delta_size": delta,
        "index_stale": stale,
        "verification": verification_stats(),
        "vector_backend": vector_store.stats(encoder.id) if vector_store.uses_milvus() else {"backend": "faiss"},
    }


def verification_stats() -> dict:
    """Geometric verification's mode and the local features it reads: how many photos have them, at what cost."""
    stored = (
        PhotoFeatures.current()
        .filter(photo__is_active=True)
        .aggregate(
            photos=Count("pk"),
            bytes=Sum("size"),
            mean_bytes_per_photo=Avg("size"),
            mean_keypoints=Avg("count"),
            older_format=Count("pk", filter=Q(format_version__lt=FORMAT_VERSION)),
        )
    )
    return {
        "mode": features.verification_mode(),
        "top_n": settings.SIMILARITY_VERIFY_TOP_N,
        "min_inliers": settings.SIMILARITY_VERIFY_MIN_INLIERS,
        "photos_with_features": stored["photos"],
        "features_bytes": stored["bytes"] or 0,
        "mean_bytes_per_photo": round(stored["mean_bytes_per_photo"] or 0),
        "mean_keypoints": round(stored["mean_keypoints"] or 0),
        "photos_with_older_format": stored["older_format"],  # re-extracted by the scheduled maintenance
    }


_cached: tuple[float, dict] | None = None
_computing = threading.Lock()


def cached_gallery_stats() -> dict:
    """:func:`gallery_stats`, at most SIMILARITY_STATS_CACHE_SECONDS old (0: always fresh)."""
    global _cached
    seconds = settings.SIMILARITY_STATS_CACHE_SECONDS
    if seconds <= 0:
        return gallery_stats()
    with _computing:
        if _cached is None or time.monotonic() - _cached[0] >= seconds:
            _cached = (time.monotonic(), gallery_stats())
        return dict(_cached[1])


def forget_cached_stats() -> None:
    global _cached
    _cached = None
