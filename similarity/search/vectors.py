"""Which encoder the gallery's vectors come from, for lookups.

``auto`` means the encoder of the current index, so lookups keep working
while a new encoder's vectors are being computed; without an index it is the
runtime's own choice (:func:`similarity.runtime.registry.target_spec`).
"""

from __future__ import annotations

from similarity import index
from similarity.runtime import config, registry
from similarity.runtime.encoders import Encoder


def resolve_spec(spec: str | None = None) -> str:
    """The concrete encoder spec lookups use for ``spec`` (default: the SIMILARITY_ENCODER setting)."""
    spec = (spec or config.current().encoder or "auto").strip()
    if spec != "auto":
        return spec
    manifest = index.read_manifest()
    return manifest.encoder if manifest is not None else registry.target_spec(spec)


def get_encoder(spec: str | None = None) -> Encoder:
    """The process-wide encoder for ``spec`` (default: the setting); it loads lazily on first use."""
    return registry.encoder_for(resolve_spec(spec))
