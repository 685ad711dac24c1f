"""Encoder specs and the process-wide encoders.

A spec names an encoder: ``open_clip:<model>/<pretrained>`` or
``efficientnet_lite0@<size>``; ``auto`` (:func:`target_spec`) is CLIP when its
weights can be had quickly, else the offline EfficientNet-Lite0. Each process
holds one loaded encoder per spec (:func:`encoder_for`); tests and benchmarks
bring their own with :func:`register` and forget them with :func:`reset`.
"""

from __future__ import annotations

import logging
import os
import threading

from similarity.runtime import config
from similarity.runtime.encoders import (
    CLIP_DEFAULT_SPEC,
    EFFICIENTNET_SIZES,
    EFFICIENTNET_SPEC,
    EfficientNetLite0Encoder,
    Encoder,
    EncoderUnavailable,
    OpenClipEncoder,
)
from similarity.runtime.encoders.clip import hub_reachable, locate_clip_weights, unavailable_message

logger = logging.getLogger(__name__)


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


def target_spec(spec: str | None = None) -> str:
    """The encoder the gallery should be on: the setting, or for ``auto`` CLIP when its weights can be had,
    else the offline encoder, whatever the current index was built with.

    Maintenance and build_clip_index embed towards it and switch the index
    once its vectors are all stored (the encoder-change path), so a gallery
    built by an older default moves to the new one by itself.
    """
    global _auto_fallback_note, _clip_checked
    spec = (spec or config.current().encoder or "auto").strip()
    if spec != "auto":
        return spec
    with _auto_note_lock:
        if not _clip_checked:
            model, _, pretrained = CLIP_DEFAULT_SPEC[len("open_clip:") :].partition("/")
            try:
                locate_clip_weights(model, pretrained, allow_download=False)
            except EncoderUnavailable:
                if not hub_reachable():  # a hub that answers means the first load downloads them
                    reason = "they are not in the local cache and the model hub cannot be reached"
                    _auto_fallback_note = f"Using the offline encoder {EFFICIENTNET_SPEC}. {unavailable_message(model, pretrained, reason)}"
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


def encoder_for(spec: str) -> Encoder:
    """The process-wide encoder for a concrete spec; it loads lazily on first use."""
    with _encoders_lock:
        encoder = _encoders.get(spec)
        if encoder is None:
            encoder = _encoders[spec] = encoder_from_spec(spec)
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
