"""ONNX copies of a tower: the check images they are compared on, export, int8 quantisation."""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from similarity.runtime.variants import Variant

CHECK_IMAGES = 8


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
