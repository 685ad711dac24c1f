"""Int8 ONNX Runtime copies of encoder models: export, quantisation, fidelity check, cache.

On a CPU with int8 dot-product instructions (AVX512-VNNI, AVX-VNNI or AMX),
ONNX Runtime runs a dynamically quantised CLIP image tower about 3x faster
than PyTorch in fp32 (bench/RESULTS.md). A copy is used only when its
embeddings stay within ``SIMILARITY_INT8_MIN_COSINE`` of the fp32 model's on
a fixed set of check images, and a model that cannot be exported is simply
left to PyTorch. Quantisation is dynamic: activation scales are taken per
batch, so a photo's vector moves slightly with its batch-mates (cosine
> 0.999 between batchings, tests/test_quantized.py). The copy and that verdict are stored under
``SIMILARITY_MODEL_CACHE_DIR``, keyed by the weights file and the library
versions, so each weights file is exported, quantised and checked once, by
one process, for all of them.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import json
import logging
import os
import re
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from django.conf import settings

from similarity.locking import FileLock

logger = logging.getLogger(__name__)

# Bump when the export or quantisation changes, so cached copies are rebuilt.
FORMAT_VERSION = 2
CHECK_IMAGES = 8
INT8_DOT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


class QuantizationRejected(RuntimeError):
    """No int8 copy is used; the message says why."""


def cpu_has_int8_dot() -> bool:
    """Whether this CPU has int8 dot-product instructions (what makes int8 pay off)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f" {flag}" in flags for flag in INT8_DOT_FLAGS)


def runtime_installed() -> bool:
    return all(importlib.util.find_spec(name) is not None for name in ("onnxruntime", "onnx", "onnxscript"))


@dataclass
class Int8Model:
    """A loaded int8 copy: maps a float32 image batch (n, 3, h, w) to feature rows.

    ``run`` spreads one batch over all the threads (lowest latency: lookups).
    ``run_bulk`` computes on the calling thread alone; several callers at
    once use the cores with no synchronisation inside a batch, which builds
    measured 8 % faster on two cores (bench/RESULTS.md). Its session is made
    on first use, so web workers never hold it.
    """

    min_cosine: float
    session: object
    model: bytes | Path
    input_name: str = "pixels"
    _bulk_session: object = None
    _bulk_lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})[0]

    def run_bulk(self, batch: np.ndarray) -> np.ndarray:
        with self._bulk_lock:
            if self._bulk_session is None:
                self._bulk_session = _session(self.model, threads=1)
        return self._bulk_session.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})[0]


def check_images(transform: Callable, count: int = CHECK_IMAGES) -> np.ndarray:
    """Deterministic photo-like images (colour fields, shapes, edges, sensor noise), preprocessed."""
    from PIL import Image, ImageDraw, ImageFilter

    rng = np.random.default_rng(2026)
    tensors = []  # the transform's float32 (C, H, W) arrays
    for _ in range(count):
        width, height = (int(side) for side in rng.integers(320, 900, size=2))
        coarse = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC)
        draw = ImageDraw.Draw(image)
        for _ in range(16):
            x0, x1 = sorted(int(v) for v in rng.integers(0, width, size=2))
            y0, y1 = sorted(int(v) for v in rng.integers(0, height, size=2))
            colour = tuple(int(v) for v in rng.integers(0, 256, size=3))
            shape = draw.rectangle if rng.random() < 0.5 else draw.ellipse
            shape((x0, y0, x1, y1), fill=colour)
        image = image.filter(ImageFilter.GaussianBlur(1.0))
        noisy = np.asarray(image, dtype=np.float32) + rng.normal(0, 6, size=(height, width, 3))
        tensors.append(transform(Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))))
    return np.stack(tensors).astype(np.float32, copy=False)


def _batch_first_attention(attention):
    """A self-attention ``nn.MultiheadAttention`` (batch first) as plain batch-first tensor operations.

    PyTorch's own forward turns batch-first inputs to sequence-first and back;
    exported, that is eight Transposes per layer, 15 % of the int8 model's
    time. The same weights and arithmetic in batch-first order keep two.
    """
    import torch
    import torch.nn.functional as F

    class BatchFirstSelfAttention(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.attention = attention

        def forward(self, query, key=None, value=None, need_weights=False, attn_mask=None, **unused):
            batch, tokens, width = query.shape
            heads = self.attention.num_heads
            qkv = F.linear(query, self.attention.in_proj_weight, self.attention.in_proj_bias)
            q, k, v = qkv.reshape(batch, tokens, 3, heads, width // heads).permute(2, 0, 3, 1, 4).unbind(0)
            mixed = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
            return self.attention.out_proj(mixed.transpose(1, 2).reshape(batch, tokens, width)), None

    return BatchFirstSelfAttention()


def _exportable(module):
    """A copy of ``module`` for export, its self-attention layers in batch-first operations.

    Only layers this rewrite covers exactly are swapped (batch first, one
    projection for q/k/v, no extra key/value biases); the fidelity check
    compares the result with the untouched model anyway.
    """
    import copy

    import torch

    exportable = copy.deepcopy(module).float().eval()
    for parent in list(exportable.modules()):
        for name, child in list(parent.named_children()):
            if (
                isinstance(child, torch.nn.MultiheadAttention)
                and child.batch_first
                and child._qkv_same_embed_dim
                and child.bias_k is None
                and not child.add_zero_attn
            ):
                setattr(parent, name, _batch_first_attention(child))
    return exportable


def _export(module, example: np.ndarray, path: Path) -> None:
    import torch

    batch = torch.export.Dim("batch", min=1, max=4096)
    # the exporter reports its progress on stdout; a management command's output must stay readable
    with contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
        torch.onnx.export(
            _exportable(module),
            (torch.from_numpy(example[:2]),),
            str(path),
            input_names=["pixels"],
            output_names=["features"],
            dynamic_shapes=({0: batch},),
            dynamo=True,
            external_data=False,
            verbose=False,
        )


class _DropPreprocessingAdvice(logging.Filter):
    """onnxruntime's quantizer advises shape pre-processing on the root logger; measured: no faster here."""

    def filter(self, record):
        return "pre-processing before quantization" not in record.getMessage()


def _quantize(source: Path, target: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    advice = _DropPreprocessingAdvice()
    logging.getLogger().addFilter(advice)
    try:
        # Matrix products only: ONNX Runtime's ConvInteger ran CLIP's patch embedding (2.6 % of the
        # arithmetic) in 24 % of the model's time; in fp32 it takes 6 %.
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"])
    finally:
        logging.getLogger().removeFilter(advice)


def _session(model: Path | bytes, threads: int):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = max(1, threads)
    options.inter_op_num_threads = 1
    source = model if isinstance(model, bytes) else str(model)
    return onnxruntime.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return np.sum(a * b, axis=1)


def _build(module, transform: Callable, target: Path, threads: int) -> dict:
    """Export, quantise and check; writes the int8 model to ``target`` and returns the verdict.

    A model the exporter or the quantiser cannot handle gives a verdict with
    the error, so no process tries again until the weights or libraries change.
    """
    try:
        return _export_quantize_check(module, transform, target, threads)
    except Exception as exc:
        logger.warning("No int8 copy could be built: %s", exc)
        return {"format": FORMAT_VERSION, "min_cosine": None, "error": f"{type(exc).__name__}: {exc}"[:500]}


def _export_quantize_check(module, transform: Callable, target: Path, threads: int) -> dict:
    import onnxruntime
    import torch

    started = time.monotonic()
    inputs = check_images(transform)
    with torch.no_grad():
        reference = module.float().eval()(torch.from_numpy(inputs)).float().numpy()
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        fp32_path = Path(scratch) / "model.onnx"
        _export(module, inputs, fp32_path)
        _quantize(fp32_path, target)
    session = _session(target, threads)
    cosines = _cosines(reference, session.run(None, {"pixels": inputs})[0])
    return {
        "format": FORMAT_VERSION,
        "min_cosine": float(cosines.min()),
        "check_images": len(inputs),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "seconds": round(time.monotonic() - started, 1),
    }


def cache_key(model_name: str, weights: str) -> str:
    """Names a weights file and the libraries that turn it into an int8 copy."""
    import onnxruntime
    import torch

    stat = os.stat(weights)
    identity = f"{model_name}|{os.path.realpath(weights)}|{stat.st_size}|{stat.st_mtime_ns}"
    identity += f"|torch {torch.__version__}|onnxruntime {onnxruntime.__version__}|format {FORMAT_VERSION}"
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", model_name).strip("-")
    return f"{slug}-{hashlib.sha256(identity.encode()).hexdigest()[:16]}"


def load_int8_model(module, transform: Callable, *, key: str | None, threads: int) -> Int8Model:
    """The int8 copy of ``module`` (a torch module: image batch -> features), built once per ``key``.

    ``key`` is None for weights that exist only in this process (random
    initialisation): the copy is then built in a scratch dir and not kept.
    Raises :class:`QuantizationRejected` when the runtime is missing or the
    copy is not faithful enough.
    """
    if not runtime_installed():
        raise QuantizationRejected("onnxruntime, onnx and onnxscript are not all installed")
    if key is None:
        with tempfile.TemporaryDirectory() as scratch:
            path = Path(scratch) / "model.int8.onnx"
            verdict = _build(module, transform, path, threads)
            return _accept(path, verdict, threads, keep_bytes=True)
    folder = Path(settings.SIMILARITY_MODEL_CACHE_DIR)
    folder.mkdir(parents=True, exist_ok=True)
    path, verdict_path = folder / f"{key}.int8.onnx", folder / f"{key}.json"
    with FileLock(folder / f"{key}.lock"):
        verdict = _read_verdict(verdict_path)
        if verdict is not None and not verdict.get("error") and not path.is_file():
            verdict = None  # the copy itself is gone
        if verdict is None:
            logger.info("Building the int8 ONNX copy of %s (once per weights file)...", key)
            partial = folder / f"{key}.int8.onnx.partial"
            verdict = _build(module, transform, partial, threads)
            if verdict.get("error"):  # the verdict alone stands for this key: no retry
                partial.unlink(missing_ok=True)
            else:
                os.replace(partial, path)
                logger.info(
                    "int8 copy %s: cosine to fp32 >= %.5f, built in %.0f s", key, verdict["min_cosine"], verdict["seconds"]
                )
            _write_json(verdict_path, verdict)
    return _accept(path, verdict, threads)


def _accept(path: Path, verdict: dict, threads: int, keep_bytes: bool = False) -> Int8Model:
    if verdict.get("error"):
        raise QuantizationRejected(f"building it failed ({verdict['error']})")
    needed = float(settings.SIMILARITY_INT8_MIN_COSINE)
    if verdict["min_cosine"] < needed:
        raise QuantizationRejected(
            f"its embeddings reach only cosine {verdict['min_cosine']:.5f} to fp32 on the check images "
            f"(SIMILARITY_INT8_MIN_COSINE={needed})"
        )
    model = path.read_bytes() if keep_bytes else path  # a scratch file is gone once this returns
    return Int8Model(min_cosine=verdict["min_cosine"], session=_session(model, threads), model=model)


def _read_verdict(path: Path) -> dict | None:
    try:
        verdict = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(verdict, dict) or verdict.get("format") != FORMAT_VERSION:
        return None
    if not verdict.get("error") and not isinstance(verdict.get("min_cosine"), (int, float)):
        return None
    return verdict


def _write_json(path: Path, data: dict) -> None:
    partial = path.with_suffix(".json.partial")
    partial.write_text(json.dumps(data, indent=2))
    os.replace(partial, path)
