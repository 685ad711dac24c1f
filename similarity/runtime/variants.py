"""The ways an image tower can run (*variants*) and which of them the settings allow here.

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
(:func:`candidates`); ``choice.py`` measures what is left.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from similarity.runtime.hardware import CpuInfo

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
