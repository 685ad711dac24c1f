"""The model runtime: image encoders and what runs them, with no Django.

* ``config.py`` -- the settings it reads (:class:`ModelSettings`) and who provides them;
* ``encoders/`` -- the :class:`Encoder` interface and one adapter per model (CLIP, EfficientNet-Lite0);
* ``registry.py`` -- encoder specs, the process-wide encoders, ``auto``, ``reset()``;
* ``variants.py`` -- the ways a model can run (PyTorch fp32/bf16, ONNX Runtime fp32/int8) and which are allowed;
* ``runners.py`` -- running one variant;
* ``copies.py`` -- ONNX copies: export, int8 quantisation, the check images;
* ``choice.py`` -- measuring the candidates once per weights file and CPU, and keeping the choice;
* ``hardware.py`` -- what this CPU can do.
"""
