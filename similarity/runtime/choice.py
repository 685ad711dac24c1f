"""What runs an image model, and the measured choice among the candidates.

An encoder hands over its image tower (a torch module: pixel batch -> feature
rows, owning its weights) and its preprocessing. On a CPU the tower can run
as one of the *variants* of ``variants.py``. When the settings leave more
than one, each is built and measured on fixed check images (:func:`check_images`): the cosine of its embeddings to
fp32 PyTorch's (batched and one image at a time: int8 activation scales
follow the batch) and its time for one image. The fastest whose cosine
reaches ``min_cosine`` wins. The choice, its figures and the chosen ONNX
copy are kept in the model cache dir under a key naming the weights file,
the libraries, the CPU, the thread count and the settings, behind a file
lock: one process measures, every process on the machine reuses it. The
record holds the copy's SHA-256: a copy that no longer matches it (truncated,
replaced) or that ONNX Runtime cannot load is removed with its record, the
load fails with :class:`RuntimeUnavailable` (lookups answer 503), and the
next load measures and builds it again. The decision is a measurement on
this CPU, not a table of CPU flags.

No Django here: the caller passes a :class:`RuntimeSettings`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, NoReturn, Sequence

import numpy as np

from similarity.runtime.copies import check_images, export_onnx, quantize
from similarity.runtime.hardware import CpuInfo
from similarity.runtime.runners import OnnxModel, TorchModel
from similarity.runtime.variants import VARIANTS, RuntimeSettings, RuntimeUnavailable, Variant, candidates

logger = logging.getLogger(__name__)

# Bump when export, quantisation, measurement or the record change, so cached choices are made again.
FORMAT_VERSION = 4  # 4: the record holds the copy's SHA-256
WARM_UP_RUNS = 3
TIMING_RUNS = 7


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
        record = _read_record(record_path)
        measured = record[0] if record else []
        winner = _winner(measured, settings) if measured else None
        uses_copy = winner is not None and VARIANTS[winner.variant].runtime == "onnxruntime"
        cached = bool(measured) and (not uses_copy or copy_path.is_file())
        if cached and uses_copy and record is not None and file_sha256(copy_path) != record[1]:
            _discard(copy_path, record_path, "does not match the checksum in its record")
        if not cached:
            logger.info("Measuring the runtimes of %s on this CPU (once per weights file and CPU)...", model_id)
            copy_sha256 = None
            with tempfile.TemporaryDirectory(dir=folder, prefix=".measure-") as scratch:
                measured = _measure(tower, transform, allowed, Path(scratch), threads, int8_ops)
                winner = _winner(measured, settings)
                if winner is not None and VARIANTS[winner.variant].runtime == "onnxruntime":
                    os.replace(Path(scratch) / f"{winner.variant}.onnx", copy_path)
                    copy_sha256 = file_sha256(copy_path)
            _write_json(
                record_path,
                {
                    "format": FORMAT_VERSION,
                    "measurements": [asdict(m) for m in measured],
                    "copy_sha256": copy_sha256,
                },
            )
        try:
            choice = _settle(tower, measured, winner, settings, threads, cpu, lambda: copy_path)
        except RuntimeUnavailable:
            raise
        except Exception as exc:  # the copy matched its checksum, yet ONNX Runtime cannot load it
            _discard(copy_path, record_path, f"cannot be loaded ({type(exc).__name__})")
        choice.cached = cached
        return choice


def file_sha256(path: Path) -> str | None:
    """The SHA-256 of a file, None when it cannot be read."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1024 * 1024), b""):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()


def _discard(copy_path: Path, record_path: Path, problem: str) -> NoReturn:
    """Remove a damaged copy and its record, so the next load builds them again; this load fails."""
    logger.error("The ONNX copy %s %s: removed; the next load measures and builds it again.", copy_path.name, problem)
    for path in (copy_path, record_path):
        path.unlink(missing_ok=True)
    raise RuntimeUnavailable(
        f"The ONNX copy of the model in the model cache {problem}; it was removed and is built again on the next load."
    )


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


def _read_record(path: Path) -> tuple[list[Measurement], str | None] | None:
    """The measurements of a cached choice and its copy's SHA-256; None when absent, unreadable or of another
    format."""
    try:
        record = json.loads(path.read_text())
        if record.get("format") != FORMAT_VERSION:
            return None
        measured = [Measurement(**m) for m in record["measurements"]]
        copy_sha256 = record.get("copy_sha256")
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None
    if not measured or any(m.variant not in VARIANTS for m in measured):
        return None
    return measured, copy_sha256 if isinstance(copy_sha256, str) else None


def _write_json(path: Path, data: dict) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(data, indent=2))
    os.replace(partial, path)
