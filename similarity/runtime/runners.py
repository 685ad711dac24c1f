"""Running a tower as one variant: PyTorch in one dtype, or an ONNX Runtime session."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np


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
    ``run_bulk`` computes on one thread, so that builds can run one call per
    core at once with no synchronisation inside a call (bench/RESULTS.md).
    Its session is made on first use, so web workers never hold it. Its threads
    sleep when they run out of work instead of spinning (ONNX Runtime's
    default): a lookup's local features are extracted beside the model, and
    spinning threads took the cores that extraction needed (bench/RESULTS.md).
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
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    source = model if isinstance(model, bytes) else str(model)
    return onnxruntime.InferenceSession(source, options, providers=["CPUExecutionProvider"])
