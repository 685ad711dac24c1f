"""What runs an image model, and the measured choice among the candidates.

An encoder hands over its image tower (a torch module: pixel batch -> feature
rows, owning its weights) and its preprocessing. On a CPU the tower can run
as one of these *variants*:

* ``torch-fp32``: PyTorch in float32, the reference every other is checked against;
* ``torch-bf16``: PyTorch in bfloat16, on CPUs that compute it natively;
* ``onnx-fp32``: an ONNX Runtime copy in float32 (exact, often much faster);
* ``onnx-int8``: an ONNX Runtime copy with dynamically quantised matrix
  products, for CPUs with int8 dot products (VNNI, AMX);
* ``onnx-int8-rr`` and ``onnx-int8-pc-rr``: the same with 7-bit weights
  (``reduce_range``), per tensor or per channel, for CPUs without them, whose
  u8s8 kernels saturate on full 8-bit weights (ONNX Runtime's quantisation
  documentation says so).

``SIMILARITY_RUNTIME`` and ``SIMILARITY_PRECISION`` narrow the candidates
(:func:`candidates`). When more than one is left, each is built and measured
on fixed check images (:func:`check_images`): the cosine of its embeddings to
fp32 PyTorch's (batched and one image at a time: int8 activation scales
follow the batch) and its time for one image. The fastest whose cosine
reaches ``min_cosine`` wins. The choice, its figures and the chosen ONNX
copy are kept in the model cache dir under a key naming the weights file,
the libraries, the CPU, the thread count and the settings, behind a file
lock: one process measures, every process on the machine reuses it. The
decision is a measurement on this CPU, not a table of CPU flags.

No Django here: the caller passes a :class:`RuntimeSettings`.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import json
import logging
import math
import os
import re
import statistics
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from similarity.hardware import CpuInfo

logger = logging.getLogger(__name__)

# Bump when export, quantisation or measurement change, so cached choices are made again.
FORMAT_VERSION = 3
CHECK_IMAGES = 8
WARM_UP_RUNS = 3
TIMING_RUNS = 7
RUNTIMES = ("auto", "torch", "onnx", "onnx-int8")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


class RuntimeUnavailable(RuntimeError):
    """The settings ask for a runtime that cannot run this model here; the message says why."""


@dataclass(frozen=True)
class Variant:
    name: str
    runtime: str  # "torch" or "onnxruntime"
    precision: str  # "float32", "bfloat16", "float16" or "int8"
    label: str
    per_channel: bool = False
    reduce_range: bool = False


VARIANTS = {
    variant.name: variant
    for variant in (
        Variant("torch-fp32", "torch", "float32", "PyTorch fp32"),
        Variant("torch-bf16", "torch", "bfloat16", "PyTorch bf16"),
        Variant("torch-fp16", "torch", "float16", "PyTorch fp16"),
        Variant("onnx-fp32", "onnxruntime", "float32", "ONNX Runtime fp32"),
        Variant("onnx-int8", "onnxruntime", "int8", "ONNX Runtime int8"),
        Variant("onnx-int8-rr", "onnxruntime", "int8", "ONNX Runtime int8 (7-bit weights)", reduce_range=True),
        Variant(
            "onnx-int8-pc-rr",
            "onnxruntime",
            "int8",
            "ONNX Runtime int8 (7-bit weights, per channel)",
            per_channel=True,
            reduce_range=True,
        ),
    )
}
TORCH_PRECISIONS = {"fp32": "torch-fp32", "bf16": "torch-bf16", "fp16": "torch-fp16"}


@dataclass(frozen=True)
class RuntimeSettings:
    runtime: str = "auto"
    precision: str = "auto"
    min_cosine: float = 0.999
    cache_dir: Path | None = None  # None: choices are made in memory and not kept


def onnx_installed() -> bool:
    return all(importlib.util.find_spec(name) is not None for name in ("onnxruntime", "onnx", "onnxscript"))


def select_device(preference: str) -> str:
    import torch

    preference = (preference or "auto").lower()
    if preference == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeUnavailable("SIMILARITY_DEVICE=cuda but no CUDA device is available; use auto or cpu.")
        return "cuda"
    if preference == "cpu":
        return "cpu"
    if preference != "auto":
        raise RuntimeUnavailable(f"SIMILARITY_DEVICE must be auto, cpu or cuda, not {preference!r}.")
    return "cuda" if torch.cuda.is_available() else "cpu"


def candidates(
    cpu: CpuInfo, device: str, settings: RuntimeSettings, *, int8_ops: Sequence[str], onnx: bool | None = None
) -> list[Variant]:
    """The variants the settings allow for this device and CPU, the fp32 reference (when allowed) first."""
    runtime, precision = settings.runtime.lower(), settings.precision.lower()
    if runtime not in RUNTIMES:
        raise RuntimeUnavailable(f"SIMILARITY_RUNTIME must be one of {', '.join(RUNTIMES)}, not {runtime!r}.")
    if precision not in PRECISIONS:
        raise RuntimeUnavailable(f"SIMILARITY_PRECISION must be one of {', '.join(PRECISIONS)}, not {precision!r}.")
    onnx = onnx_installed() if onnx is None else onnx
    if device != "cpu":
        if runtime not in ("auto", "torch"):
            raise RuntimeUnavailable(
                f"SIMILARITY_RUNTIME={runtime} runs on the CPU; set SIMILARITY_DEVICE=cpu or the runtime to auto."
            )
        return [VARIANTS[TORCH_PRECISIONS.get(precision, "torch-fp16")]]
    if precision != "auto":  # a precision is a PyTorch setting
        if runtime not in ("auto", "torch"):
            raise RuntimeUnavailable(
                f"SIMILARITY_PRECISION={precision} is a PyTorch precision; use it with SIMILARITY_RUNTIME=auto or torch."
            )
        return [VARIANTS[TORCH_PRECISIONS[precision]]]
    if runtime in ("onnx", "onnx-int8") and not onnx:
        raise RuntimeUnavailable(f"SIMILARITY_RUNTIME={runtime} needs onnxruntime, onnx and onnxscript installed.")
    allowed: list[Variant] = []
    if runtime in ("auto", "torch"):
        allowed.append(VARIANTS["torch-fp32"])
        if cpu.bf16:
            allowed.append(VARIANTS["torch-bf16"])
    if runtime in ("auto", "onnx") and onnx:
        allowed.append(VARIANTS["onnx-fp32"])
    if runtime in ("auto", "onnx-int8") and onnx:
        if not int8_ops:
            if runtime == "onnx-int8":
                raise RuntimeUnavailable("SIMILARITY_RUNTIME=onnx-int8: this model has no int8 form.")
        elif cpu.int8_dot:
            allowed.append(VARIANTS["onnx-int8"])
        else:
            allowed += [VARIANTS["onnx-int8-rr"], VARIANTS["onnx-int8-pc-rr"]]
    return allowed


# --- running a variant ------------------------------------------------------------------


class TorchModel:
    """The tower in PyTorch, in one dtype, on one device."""

    parallel_bulk = False

    def __init__(self, tower, precision: str, device: str):
        import torch

        self.dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[precision]
        self.device = device
        self.tower = tower.to(device=device, dtype=self.dtype).eval()

    def run(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            pixels = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device, self.dtype)
            return self.tower(pixels).float().cpu().numpy()

    run_bulk = run


class OnnxModel:
    """An ONNX Runtime copy of the tower.

    ``run`` spreads one batch over ``threads`` (lowest latency: lookups);
    ``run_bulk`` computes on one thread, so that builds can run one batch per
    core at once with no synchronisation inside a batch (bench/RESULTS.md).
    Its session is made on first use, so web workers never hold it.
    """

    parallel_bulk = True

    def __init__(self, model: bytes | Path, threads: int):
        self.model = model
        self.session = _session(model, threads)
        self.input_name = self.session.get_inputs()[0].name
        self._bulk_session: Any = None
        self._bulk_lock = threading.Lock()

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})[0]

    def run_bulk(self, batch: np.ndarray) -> np.ndarray:
        with self._bulk_lock:
            if self._bulk_session is None:
                self._bulk_session = _session(self.model, threads=1)
        return self._bulk_session.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})[0]


def _session(model: Path | bytes, threads: int):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = max(1, threads)
    options.inter_op_num_threads = 1
    source = model if isinstance(model, bytes) else str(model)
    return onnxruntime.InferenceSession(source, options, providers=["CPUExecutionProvider"])


# --- building ONNX copies -------------------------------------------------------------------


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


def exportable(tower):
    """A float32 copy of ``tower`` for export, its self-attention layers in batch-first operations.

    Only layers this rewrite covers exactly are swapped (batch first, one
    projection for q/k/v, no extra key/value biases); every copy is compared
    with the untouched model anyway.
    """
    import copy

    import torch

    copied = copy.deepcopy(tower).float().eval()
    for parent in list(copied.modules()):
        for name, child in list(parent.named_children()):
            if (
                isinstance(child, torch.nn.MultiheadAttention)
                and child.batch_first
                and child._qkv_same_embed_dim
                and child.bias_k is None
                and not child.add_zero_attn
            ):
                setattr(parent, name, _batch_first_attention(child))
    return copied


def export_onnx(tower, example: np.ndarray, path: Path) -> None:
    import torch

    batch = torch.export.Dim("batch", min=1, max=4096)
    # the exporter reports its progress on stdout; a management command's output must stay readable
    with contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
        torch.onnx.export(
            exportable(tower),
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


def quantize(source: Path, target: Path, variant: Variant, op_types: Sequence[str]) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    advice = _DropPreprocessingAdvice()
    logging.getLogger().addFilter(advice)
    try:
        quantize_dynamic(
            str(source),
            str(target),
            weight_type=QuantType.QInt8,
            op_types_to_quantize=list(op_types),
            per_channel=variant.per_channel,
            reduce_range=variant.reduce_range,
        )
    finally:
        logging.getLogger().removeFilter(advice)


# --- measuring and choosing -----------------------------------------------------------------


@dataclass
class Measurement:
    variant: str
    label: str
    ms_per_image: float | None = None
    cosine: float | None = None  # lowest cosine to fp32 on the check images
    error: str = ""  # why it could not be built or run
    accepted: bool = False
    reason: str = ""  # why it was not accepted


@dataclass
class RuntimeChoice:
    """What runs the tower, and why."""

    variant: Variant
    model: TorchModel | OnnxModel
    note: str
    measurements: list[Measurement] = field(default_factory=list)
    cpu: str = ""
    cached: bool = False

    def report(self) -> dict:
        return {
            "variant": self.variant.name,
            "runtime": self.variant.runtime,
            "precision": self.variant.precision,
            "cpu": self.cpu,
            "note": self.note,
            "reused_from_cache": self.cached,
            "candidates": [asdict(measurement) for measurement in self.measurements],
        }


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return np.sum(a * b, axis=1)


def _lowest_cosine(run: Callable, inputs: np.ndarray, reference: np.ndarray) -> float:
    """Against fp32, the worse of one batch of all check images and each image alone."""
    batched = _cosines(reference, run(inputs)).min()
    alone = min(_cosines(reference[i : i + 1], run(inputs[i : i + 1]))[0] for i in range(len(inputs)))
    return float(min(batched, alone))


def cache_key(
    model_id: str, weights: str, cpu: CpuInfo, threads: int, allowed: Sequence[Variant], min_cosine: float
) -> str:
    """Names a weights file, the libraries, the CPU and the settings a choice was measured under."""
    import onnxruntime
    import torch

    stat = os.stat(weights)
    identity = "|".join(
        [
            model_id,
            os.path.realpath(weights),
            str(stat.st_size),
            str(stat.st_mtime_ns),
            f"torch {torch.__version__}",
            f"onnxruntime {onnxruntime.__version__}",
            f"format {FORMAT_VERSION}",
            cpu.describe(),
            f"threads {threads}",
            ",".join(variant.name for variant in allowed),
            f"min cosine {min_cosine}",
        ]
    )
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", model_id).strip("-")[:60]
    return f"{slug}-{hashlib.sha256(identity.encode()).hexdigest()[:16]}"


def choose_runtime(
    tower,
    transform: Callable,
    *,
    model_id: str,
    weights: str | None,
    device: str,
    cpu: CpuInfo,
    threads: int,
    settings: RuntimeSettings,
    int8_ops: Sequence[str] = ("MatMul", "Gemm"),
) -> RuntimeChoice:
    """The runtime for ``tower`` (a float32 torch module) on ``device``, measured where there is a choice.

    ``weights`` names the weights file; None for weights that exist only in
    this process (random initialisation): the choice is then measured
    without keeping anything. Raises :class:`RuntimeUnavailable` when an
    explicit SIMILARITY_RUNTIME has no faithful variant.
    """
    allowed = candidates(cpu, device, settings, int8_ops=int8_ops)
    if device != "cpu" or (len(allowed) == 1 and allowed[0].runtime == "torch"):
        variant = allowed[0]
        where = "CUDA" if device != "cpu" else f"this CPU ({cpu.describe()})"
        note = (
            f"{variant.label} on {where}: the only runtime SIMILARITY_RUNTIME={settings.runtime} "
            f"and SIMILARITY_PRECISION={settings.precision} allow here."
        )
        only = Measurement(variant.name, variant.label, accepted=True)  # nothing to compare it with
        return RuntimeChoice(variant, TorchModel(tower, variant.precision, device), note, [only], cpu.describe())
    if weights is None or settings.cache_dir is None:
        with tempfile.TemporaryDirectory(prefix="geolocator-runtime-") as scratch:
            measured = _measure(tower, transform, allowed, Path(scratch), threads, int8_ops)
            winner = _winner(measured, settings)
            copy_file = (
                Path(scratch) / f"{winner.variant if winner else 'none'}.onnx"
            )  # read only when an ONNX copy won
            return _settle(tower, measured, winner, settings, threads, cpu, copy_file.read_bytes)
    from filelock import FileLock

    folder = Path(settings.cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    key = cache_key(model_id, weights, cpu, threads, allowed, settings.min_cosine)
    copy_path, record_path = folder / f"{key}.onnx", folder / f"{key}.json"
    with FileLock(str(folder / f"{key}.lock")):
        measured = _read_record(record_path) or []
        winner = _winner(measured, settings) if measured else None
        cached = bool(measured) and (
            winner is None or VARIANTS[winner.variant].runtime == "torch" or copy_path.is_file()
        )
        if not cached:
            logger.info("Measuring the runtimes of %s on this CPU (once per weights file and CPU)...", model_id)
            with tempfile.TemporaryDirectory(dir=folder, prefix=".measure-") as scratch:
                measured = _measure(tower, transform, allowed, Path(scratch), threads, int8_ops)
                winner = _winner(measured, settings)
                if winner is not None and VARIANTS[winner.variant].runtime == "onnxruntime":
                    os.replace(Path(scratch) / f"{winner.variant}.onnx", copy_path)
            _write_json(record_path, {"format": FORMAT_VERSION, "measurements": [asdict(m) for m in measured]})
        choice = _settle(tower, measured, winner, settings, threads, cpu, lambda: copy_path)
        choice.cached = cached
        return choice


def _measure(tower, transform, allowed, scratch: Path, threads: int, int8_ops) -> list[Measurement]:
    """Build every allowed variant in ``scratch`` (ONNX copies as ``<variant>.onnx``), check and time it."""
    import torch

    started = time.monotonic()
    inputs = check_images(transform)
    tower = tower.float().eval()
    with torch.inference_mode():
        reference = tower(torch.from_numpy(inputs)).float().numpy()
    runners: dict[str, Callable] = {}
    results: dict[str, Measurement] = {}
    fp32_onnx = scratch / "onnx-fp32.onnx"
    export_error = ""
    for variant in allowed:
        result = results[variant.name] = Measurement(variant.name, variant.label)
        try:
            if variant.runtime == "torch":
                if variant.name == "torch-fp32":
                    runners[variant.name] = TorchModel(tower, "float32", "cpu").run
                    result.cosine = 1.0  # the reference itself
                    continue
                import copy

                runner = TorchModel(copy.deepcopy(tower), variant.precision, "cpu").run
            else:
                if export_error:
                    raise RuntimeError(export_error)
                if not fp32_onnx.exists():
                    try:
                        export_onnx(tower, inputs, fp32_onnx)
                    except Exception as exc:
                        export_error = f"export failed ({type(exc).__name__}: {exc})"[:400]
                        raise RuntimeError(export_error) from None
                path = scratch / f"{variant.name}.onnx"
                if variant.precision == "int8":
                    quantize(fp32_onnx, path, variant, int8_ops)
                runner = OnnxModel(path if path.exists() else fp32_onnx, threads).run
            result.cosine = _lowest_cosine(runner, inputs, reference)
            runners[variant.name] = runner
        except Exception as exc:
            result.error = str(exc) if str(exc).startswith("export failed") else f"{type(exc).__name__}: {exc}"[:400]
            logger.warning("Runtime %s could not be built here: %s", variant.name, result.error)
    one = inputs[:1]
    for name, runner in runners.items():
        # one block per candidate, warmed up first: a runtime's threads spin for a while after a run
        # (OpenMP, ONNX Runtime), which would slow whichever candidate ran next in interleaved rounds
        for _ in range(WARM_UP_RUNS):
            runner(one)
        timings = []
        for _ in range(TIMING_RUNS):
            began = time.perf_counter()
            runner(one)
            timings.append((time.perf_counter() - began) * 1000)
        results[name].ms_per_image = round(statistics.median(timings), 2)
    if (scratch / "onnx-fp32.onnx").exists() and "onnx-fp32" not in runners:
        (scratch / "onnx-fp32.onnx").unlink()
    logger.info("Measured %d runtime(s) in %.0f s", len(allowed), time.monotonic() - started)
    return [results[variant.name] for variant in allowed]


def _winner(measured: list[Measurement], settings: RuntimeSettings) -> Measurement | None:
    """The fastest measured variant whose cosine reaches the bar; marks each as accepted or not, with the reason."""
    for measurement in measured:
        if measurement.error:
            measurement.accepted, measurement.reason = False, measurement.error
        elif measurement.cosine is None or not math.isfinite(measurement.cosine):
            measurement.accepted, measurement.reason = False, "no cosine measured"
        elif measurement.cosine < settings.min_cosine:
            measurement.accepted = False
            measurement.reason = (
                f"cosine {measurement.cosine:.5f} to fp32 on the check images, below {settings.min_cosine}"
            )
        elif measurement.ms_per_image is None:
            measurement.accepted, measurement.reason = False, "not timed"
        else:
            measurement.accepted, measurement.reason = True, ""
    accepted = [m for m in measured if m.accepted]
    return min(accepted, key=lambda m: m.ms_per_image or 0.0) if accepted else None  # accepted ones are timed


def _settle(tower, measured, winner, settings, threads, cpu: CpuInfo, onnx_copy: Callable) -> RuntimeChoice:
    """The chosen variant, ready to run; ``onnx_copy()`` gives the ONNX copy's path or bytes when one won."""
    if winner is None:
        reasons = "; ".join(f"{m.label}: {m.reason}" for m in measured)
        raise RuntimeUnavailable(
            f"SIMILARITY_RUNTIME={settings.runtime} has no faithful runtime on this CPU ({reasons})."
        )
    variant = VARIANTS[winner.variant]
    model: TorchModel | OnnxModel
    if variant.runtime == "torch":
        model = TorchModel(tower, variant.precision, "cpu")
    else:
        model = OnnxModel(onnx_copy(), threads)
    return RuntimeChoice(variant, model, _explain(winner, measured, settings, cpu), measured, cpu.describe())


def _explain(winner: Measurement, measured: list[Measurement], settings: RuntimeSettings, cpu: CpuInfo) -> str:
    others = [m for m in measured if m is not winner and m.accepted]
    note = (
        f"{winner.label}: the fastest of {len(measured)} runtime(s) measured on this CPU ({cpu.describe()}) "
        f"whose embeddings keep cosine >= {settings.min_cosine} to fp32 on the check images "
        f"({winner.ms_per_image:.1f} ms per image"
    )
    note += "".join(f"; {m.label} {m.ms_per_image:.1f} ms" for m in others) + ")."
    rejected = [m for m in measured if not m.accepted]
    if rejected:
        note += " Not used: " + "; ".join(f"{m.label} ({m.reason})" for m in rejected) + "."
    return note


def _read_record(path: Path) -> list[Measurement] | None:
    """The measurements of a cached choice; None when absent, unreadable or of another format."""
    try:
        record = json.loads(path.read_text())
        if record.get("format") != FORMAT_VERSION:
            return None
        measured = [Measurement(**m) for m in record["measurements"]]
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None
    if not measured or any(m.variant not in VARIANTS for m in measured):
        return None
    return measured


def _write_json(path: Path, data: dict) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(data, indent=2))
    os.replace(partial, path)


__all__ = [
    "RuntimeChoice",
    "RuntimeSettings",
    "RuntimeUnavailable",
    "VARIANTS",
    "candidates",
    "check_images",
    "choose_runtime",
    "onnx_installed",
    "select_device",
]
