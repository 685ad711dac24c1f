"""What the CPU can do, as far as choosing a model runtime goes.

The runtime choice (``choice.py``) asks two questions of the CPU: does it
have int8 dot products (AVX512-VNNI, AVX-VNNI, AMX), which decide how an int8
copy is quantised, and does it compute bfloat16 natively (AVX512-BF16, AMX).
The answers come from ``/proc/cpuinfo``, or from a flag list given in place
of it (``SIMILARITY_CPU_FLAGS``), so that every branch can be exercised on
any machine. No Django here.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

INT8_DOT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
# What a benchmark prints and a cache key records: the flags that change which kernels run.
RELEVANT_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "avx512_bf16", "amx_bf16")


@dataclass(frozen=True)
class CpuInfo:
    model: str
    flags: frozenset[str]
    simulated: bool = False  # the flags were given, not read from this CPU

    @property
    def int8_dot(self) -> bool:
        """int8 dot-product instructions: ONNX Runtime's u8s8 kernels do not saturate."""
        return any(flag in self.flags for flag in INT8_DOT_FLAGS)

    @property
    def bf16(self) -> bool:
        return any(flag in self.flags for flag in BF16_FLAGS)

    @property
    def relevant_flags(self) -> tuple[str, ...]:
        return tuple(flag for flag in RELEVANT_FLAGS if flag in self.flags)

    def describe(self) -> str:
        flags = " ".join(self.relevant_flags) or "none of " + " ".join(RELEVANT_FLAGS)
        return f"{self.model} ({flags}{', simulated' if self.simulated else ''})"


def parse_flags(text: str) -> frozenset[str]:
    return frozenset(flag.lower() for flag in re.split(r"[\s,]+", text) if flag)


def read_cpuinfo(path: Path = Path("/proc/cpuinfo")) -> tuple[str, frozenset[str]]:
    """(model name, flags) of the first processor listed; unknown and empty where there is no such file."""
    try:
        text = path.read_text()
    except OSError:
        return "unknown CPU", frozenset()
    model = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    flags = re.search(r"^flags\s*:\s*(.+)$", text, re.MULTILINE)
    return (model.group(1).strip() if model else "unknown CPU"), parse_flags(flags.group(1) if flags else "")


def detect_cpu(simulated_flags: str | None = None) -> CpuInfo:
    """This CPU, or one with ``simulated_flags`` (comma or space separated) instead of its own."""
    model, flags = read_cpuinfo()
    if simulated_flags and simulated_flags.strip():
        return CpuInfo(model, parse_flags(simulated_flags), simulated=True)
    return CpuInfo(model, flags)


def cpu_count() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1
