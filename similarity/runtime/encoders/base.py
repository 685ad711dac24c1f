"""The Encoder interface and what every encoder shares: lazy loading on one inference thread, the
measured runtime (runtime/choice.py), batching, Server-Timing stages. Each adapter (efficientnet.py,
clip.py) says how to load its model and prepare its inputs."""

from __future__ import annotations

import logging
import os
import threading
from abc import ABC, abstractmethod
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Sequence

import numpy as np

from similarity.runtime import config
from similarity.runtime.choice import RuntimeChoice, choose_runtime
from similarity.runtime.hardware import detect_cpu
from similarity.runtime.variants import RuntimeUnavailable, select_device
from similarity.timing import stage

logger = logging.getLogger("similarity.runtime.encoders")

WEIGHT_FILE_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")


def _looks_like_path(pretrained: str) -> bool:
    return os.sep in pretrained or pretrained.startswith(".") or pretrained.lower().endswith(WEIGHT_FILE_SUFFIXES)


def public_spec(spec: str) -> str:
    """An encoder spec as responses may show it: a local weights file by its name, not its path."""
    if spec.startswith("open_clip:"):
        model, separator, pretrained = spec[len("open_clip:") :].partition("/")
        if separator and _looks_like_path(pretrained):
            return f"open_clip:{model}/{os.path.basename(pretrained)}"
    return spec


class EncoderUnavailable(RuntimeError):
    """The encoder cannot be loaded here; the message says how to fix it."""


class TextNotSupported(RuntimeError):
    """The encoder only embeds images."""


class Encoder(ABC):
    """Embeds images (and, where supported, text) as L2-normalised float32 rows."""

    id: str
    family: str
    dim: int
    supports_text = False
    # operator types an int8 copy quantises (empty: the model has no int8 form)
    int8_ops: tuple[str, ...] = ("MatMul", "Gemm")
    # images per model call when a build runs an ONNX Runtime copy; None: each batch split evenly over the cores
    bulk_call_size: int | None = None

    def __init__(self, device: str | None = None, precision: str | None = None, runtime: str | None = None):
        self._device_preference = device
        self._precision_preference = precision
        self._runtime_preference = runtime
        self._lock = threading.Lock()
        self._loaded = False
        self._choice: RuntimeChoice | None = None
        self._inference: ThreadPoolExecutor | None = None
        self._bulk_pool: ThreadPoolExecutor | None = None  # ONNX Runtime builds only (no PyTorch runs there)
        self._tower: Callable = lambda pixels: pixels  # set by _load(): pixel batch -> raw feature rows

    @property
    def device(self) -> str:
        self._ensure_loaded()
        return self._device

    @property
    def default_threshold(self) -> float:
        return float(config.current().thresholds[self.family])

    def load(self) -> "Encoder":
        """Load the model now (it otherwise loads on first use); raises EncoderUnavailable."""
        self._ensure_loaded()
        return self

    def _loaded_choice(self) -> RuntimeChoice:
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

        settings = config.current()
        try:
            self._device = select_device(self._device_preference or settings.device)
            self._cpu_threads = torch.get_num_threads()
            self._load()
            self._choice = choose_runtime(
                self._tower,
                self._transform,
                model_id=self.id,
                weights=self._weights_file(),
                device=self._device,
                cpu=detect_cpu(settings.cpu_flags),
                threads=self._cpu_threads,
                settings=settings.runtime_settings(self._runtime_preference, self._precision_preference),
                int8_ops=self.int8_ops,
            )
        except RuntimeUnavailable as exc:
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

        ``bulk`` (index builds): with an ONNX Runtime copy, the batch is cut
        into calls of :attr:`bulk_call_size` images (by default an even share
        per core), which run at once on :attr:`bulk_parallelism` threads, so
        every core works to the batch's last image; otherwise batches queue
        for the inference thread.
        """
        choice = self._loaded_choice()
        if len(inputs) == 0:
            done: Future = Future()
            done.set_result(np.zeros((0, self.dim), dtype=np.float32))
            return done
        if bulk and choice.model.parallel_bulk:
            pool = self._bulk_inference()
            batch = np.stack(inputs)
            size = self.bulk_call_size or -(-len(batch) // self.bulk_parallelism)
            calls = [batch[start : start + size] for start in range(0, len(batch), size)]
            return _stacked([pool.submit(self._embed_batch, call, True) for call in calls])
        inference = self._inference
        if inference is None:  # loaded together with the choice; only a failed load leaves it unset
            raise EncoderUnavailable(f"{self.id} did not load.")
        return inference.submit(self._embed_batch, np.stack(inputs))

    @property
    def bulk_parallelism(self) -> int:
        """How many model calls ``embed_tensors_async(bulk=True)`` runs at once."""
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

    input_side = 224  # the side of the model's square input; each adapter sets its own
    # How far a JPEG may be shrunk while decoding (DCT scaling, by a power of two): down to this many
    # times the input side. Twice keeps embeddings within cosine 0.999 of a full decode
    # (bench/fidelity.py; at 1x the DCT scaling costs up to 0.0075).
    draft_factor = 2.0

    @property
    def draft_min_side(self) -> int:
        """The smallest side a JPEG may be decoded to for this encoder."""
        return round(self.draft_factor * self.input_side)

    @property
    def draft_size(self) -> int | None:
        """What to pass to images.open_image(draft_size=...): None when SIMILARITY_JPEG_DRAFT is off."""
        return self.draft_min_side if config.current().jpeg_draft else None

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
        """The measured choice, e.g. onnx-int8-rr (variants.VARIANTS)."""
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


def _stacked(parts: list[Future]) -> Future:
    """One future of the parts' rows, stacked in order; done when the last part is (failed if any part failed)."""
    whole: Future = Future()
    remaining = len(parts)
    lock = threading.Lock()

    def part_done(_: Future) -> None:
        nonlocal remaining
        with lock:
            remaining -= 1
            if remaining:
                return
        try:
            whole.set_result(np.vstack([part.result() for part in parts]))
        except BaseException as exc:  # noqa: BLE001 -- handed to whoever waits on the whole
            whole.set_exception(exc)

    for part in parts:
        part.add_done_callback(part_done)
    return whole
