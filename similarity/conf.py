"""The app's settings as the Django-free packages read them.

The model runtime (``similarity.runtime``) and the vector index
(``similarity.index``) never import Django; :func:`configure` (called when the
app starts) points them at ``SIMILARITY_*`` here. Each is read on use, so
``override_settings`` in tests takes effect at the next load.
"""

from __future__ import annotations

from pathlib import Path

from django.conf import settings

from similarity.index.config import IndexSettings
from similarity.runtime.config import ModelSettings


def model_settings() -> ModelSettings:
    return ModelSettings(
        encoder=settings.SIMILARITY_ENCODER,
        device=settings.SIMILARITY_DEVICE,
        runtime=settings.SIMILARITY_RUNTIME,
        precision=settings.SIMILARITY_PRECISION,
        min_cosine=float(settings.SIMILARITY_RUNTIME_MIN_COSINE),
        cache_dir=Path(settings.SIMILARITY_MODEL_CACHE_DIR),
        cpu_flags=settings.SIMILARITY_CPU_FLAGS,
        jpeg_draft=bool(settings.SIMILARITY_JPEG_DRAFT),
        thresholds=dict(settings.SIMILARITY_THRESHOLDS),
    )


def index_settings() -> IndexSettings:
    return IndexSettings(
        directory=Path(settings.SIMILARITY_INDEX_DIR),
        index_type=settings.SIMILARITY_INDEX_TYPE,
        storage=settings.SIMILARITY_INDEX_STORAGE,
        exact_limit=int(settings.SIMILARITY_EXACT_LIMIT),
        ivf_nprobe=int(settings.SIMILARITY_IVF_NPROBE),
        device=settings.SIMILARITY_DEVICE,
    )


def configure() -> None:
    """Let the runtime and index packages read this project's settings."""
    from similarity.index import config as index_config
    from similarity.runtime import config as runtime_config

    runtime_config.configure(model_settings)
    index_config.configure(index_settings)
