"""CLIP image and text encoders from open_clip, and finding their weights: a local file, the
Hugging Face cache, or a download when the hub answers (never open_clip's long retries)."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from similarity.runtime.encoders.base import Encoder, EncoderUnavailable, _looks_like_path
from similarity.runtime.encoders.efficientnet import EFFICIENTNET_SPEC
from similarity.runtime.encoders.resize import resize

CLIP_DEFAULT_SPEC = "open_clip:ViT-B-32/openai"


def hub_reachable(timeout: float = 3.0) -> bool:
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


def unavailable_message(model: str, pretrained: str, reason: str) -> str:
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
            raise EncoderUnavailable(unavailable_message(model, pretrained, f"no file at {path}"))
        return str(path)
    cfg = open_clip.get_pretrained_cfg(model, pretrained)
    if not cfg:
        known = ", ".join(open_clip.list_pretrained_tags_by_model(model)) or "none"
        raise EncoderUnavailable(f"open_clip has no pretrained tag '{pretrained}' for {model} (known: {known}).")
    cached = _cached_clip_weights(cfg)
    if cached:
        return cached
    if not allow_download:
        raise EncoderUnavailable(unavailable_message(model, pretrained, "they are not in the local cache"))
    if not hub_reachable():
        raise EncoderUnavailable(
            unavailable_message(
                model, pretrained, "they are not in the local cache and the model hub cannot be reached"
            )
        )
    try:
        return open_clip.download_pretrained(cfg)
    except Exception as exc:
        raise EncoderUnavailable(unavailable_message(model, pretrained, f"download failed ({exc})")) from exc


class OpenClipEncoder(Encoder):
    """A CLIP image/text encoder from open_clip.

    ``pretrained=None`` builds the same architecture with random weights: the
    same code path and shapes, for tests of plumbing (never of quality).
    """

    family = "open_clip"
    supports_text = True

    def __init__(
        self,
        model: str = "ViT-B-32",
        pretrained: str | None = "openai",
        device: str | None = None,
        precision: str | None = None,
        runtime: str | None = None,
    ):
        import open_clip

        super().__init__(device, precision, runtime)
        config = open_clip.get_model_config(model)
        if config is None:
            raise EncoderUnavailable(f"open_clip has no model named '{model}'.")
        self.model_name = model
        self.pretrained = pretrained
        self.id = f"open_clip:{model}/{pretrained if pretrained else 'random-init'}"
        self.dim = int(config["embed_dim"])
        self.input_side = int(config["vision_cfg"].get("image_size", 224))

    def _load(self):
        import open_clip

        weights = None
        quick_gelu = False
        self._weights_path = None
        if self.pretrained:
            weights = self._weights_path = locate_clip_weights(self.model_name, self.pretrained)
            cfg = open_clip.get_pretrained_cfg(self.model_name, self.pretrained) or {}
            quick_gelu = bool(cfg.get("quick_gelu", False))
        model, _, preprocess = open_clip.create_model_and_transforms(
            self.model_name, pretrained=weights, device=self._device, force_quick_gelu=quick_gelu
        )
        self._model = model.eval()
        self._tower = model.visual  # encode_image without normalising; the text tower stays fp32
        self._preprocess = preprocess
        self._numpy_preprocess = ClipPreprocessing.from_config(model.visual.preprocess_cfg)
        self._tokenizer = open_clip.get_tokenizer(self.model_name)

    def _weights_file(self):
        return self._weights_path

    def _transform(self, image):
        if self._numpy_preprocess is None:  # a resize mode ClipPreprocessing does not copy
            return self._preprocess(image).numpy()
        return self._numpy_preprocess(image)

    def embed_text(self, texts):
        self._ensure_loaded()
        return self._run_on_inference_thread(self._embed_text, list(texts))

    def _embed_text(self, texts: list) -> np.ndarray:
        import torch

        with torch.inference_mode():
            tokens = self._tokenizer(texts).to(self._device)
            features = torch.nn.functional.normalize(self._model.encode_text(tokens).float(), dim=-1)
        return features.cpu().numpy().astype(np.float32, copy=False)


class ClipPreprocessing:
    """open_clip's inference transform in Pillow and NumPy (no PyTorch).

    Shortest side resized to the input size (torchvision's rounding), centre
    crop, scale to [0, 1], normalise. The resize computes only the pixels the
    crop keeps (Pillow's source ``box``): a quarter less work on a 4:3 photo,
    its horizontal pass on two threads (``resize.py``), and the same filter at
    the same positions, so values differ from open_clip's own transform by at
    most one grey level through float rounding (tests/test_encoders.py).
    """

    def __init__(self, size: int, mean, std, interpolation: str):
        from PIL import Image

        self.size = size
        self.mean = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
        self.std = np.asarray(std, dtype=np.float32).reshape(3, 1, 1)
        self.resample = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}[interpolation]

    @classmethod
    def from_config(cls, cfg: dict) -> "ClipPreprocessing | None":
        size = cfg.get("size")
        size = size if isinstance(size, int) else (size[0] if size and size[0] == size[1] else None)
        if size is None or cfg.get("resize_mode", "shortest") != "shortest":
            return None
        if cfg.get("interpolation") not in ("bicubic", "bilinear"):
            return None
        return cls(size, cfg["mean"], cfg["std"], cfg["interpolation"])

    def __call__(self, image) -> np.ndarray:
        width, height = image.size
        short, long = min(width, height), max(width, height)
        new_long = int(self.size * long / short)
        new_width, new_height = (self.size, new_long) if width <= height else (new_long, self.size)
        # the centre crop of the resized image, as torchvision rounds it
        left = int(round((new_width - self.size) / 2.0))
        top = int(round((new_height - self.size) / 2.0))
        if (new_width, new_height) == image.size:
            image = image.crop((left, top, left + self.size, top + self.size))
        else:
            scale_x, scale_y = width / new_width, height / new_height
            box = (left * scale_x, top * scale_y, (left + self.size) * scale_x, (top + self.size) * scale_y)
            image = resize(image, (self.size, self.size), self.resample, box=box)
        image = image.convert("RGB")
        pixels = np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / np.float32(255)
        return np.ascontiguousarray((pixels - self.mean) / self.std, dtype=np.float32)
