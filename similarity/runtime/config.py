"""The settings the model runtime reads, as one dataclass, and where it gets them.

The runtime package never imports Django. Whoever runs it says where its
settings come from with :func:`configure` (the Django app does so when it
starts, from ``SIMILARITY_*``); a bench script or a test may pass its own.
The provider is asked on each use, so settings changed at run time (tests)
take effect on the next load.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

from similarity.runtime.variants import RuntimeSettings


@dataclass(frozen=True)
class ModelSettings:
    encoder: str = "auto"  # a spec: auto, efficientnet_lite0@<size> or open_clip:<model>/<pretrained>
    device: str = "auto"  # auto, cpu or cuda
    runtime: str = "auto"  # auto, torch, onnx or onnx-int8 (variants.RUNTIMES)
    precision: str = "auto"  # auto, fp32, bf16 or fp16
    min_cosine: float = 0.999  # the fidelity bar a runtime must reach against fp32
    cache_dir: Path | None = None  # where measured choices and ONNX copies are kept (None: nowhere)
    cpu_flags: str = ""  # simulate a CPU with these flags (tests, benchmarks)
    jpeg_draft: bool = True  # let JPEG decoding shrink by DCT scaling, down to twice the input
    # encoder family -> the similarity a match needs before its coordinates are reported
    thresholds: Mapping[str, float] = field(default_factory=lambda: {"open_clip": 0.75, "efficientnet_lite0": 0.70})

    def runtime_settings(self, runtime: str | None = None, precision: str | None = None) -> RuntimeSettings:
        """What choosing a runtime needs, with an encoder's own overrides."""
        return RuntimeSettings(
            runtime=(runtime or self.runtime).lower(),
            precision=(precision or self.precision).lower(),
            min_cosine=float(self.min_cosine),
            cache_dir=Path(self.cache_dir) if self.cache_dir is not None else None,
        )


_provider: Callable[[], ModelSettings] = ModelSettings


def configure(provider: Callable[[], ModelSettings]) -> None:
    """Take the runtime's settings from ``provider`` from now on."""
    global _provider
    _provider = provider


def current() -> ModelSettings:
    return _provider()
