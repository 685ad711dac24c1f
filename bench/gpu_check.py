"""The CUDA paths, where a GPU is: encoders on the GPU against fp32 on the CPU, timings, FAISS.

Needs no database or server (Django settings are configured in-process):

* fidelity: every sample_gallery photo embedded by each encoder on the GPU
  (SIMILARITY_DEVICE=auto picks CUDA, SIMILARITY_PRECISION=auto picks fp16)
  and by the same weights in fp32 on the CPU; cosine min / median;
* per-query time on a 12-megapixel JPEG, one run: naive (full decode,
  open_clip's transform, fp32 forward on the GPU) against optimised (draft
  decoding, NumPy preprocessing, fp16 forward), p50 of 30;
* model throughput on the GPU at batch 64;
* FAISS: the index loads and answers with SIMILARITY_DEVICE=auto; on the GPU
  when FAISS has GPU support, else (faiss-cpu) on the CPU, as documented.

    python bench/gpu_check.py
"""

import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def configure() -> Path:
    from django.conf import settings

    scratch = Path(tempfile.mkdtemp(prefix="geolocator-gpu-"))
    settings.configure(
        SIMILARITY_ENCODER="efficientnet_lite0@384",
        SIMILARITY_DEVICE="auto",
        SIMILARITY_PRECISION="auto",
        SIMILARITY_RUNTIME="auto",
        SIMILARITY_JPEG_DRAFT=True,
        SIMILARITY_MAX_IMAGE_PIXELS=60_000_000,
        SIMILARITY_THRESHOLDS={"open_clip": 0.75, "efficientnet_lite0": 0.7},
        SIMILARITY_INDEX_DIR=scratch / "index",
        SIMILARITY_INDEX_TYPE="auto",
        SIMILARITY_EXACT_LIMIT=50_000,
        SIMILARITY_INDEX_STORAGE="float32",
        SIMILARITY_IVF_NPROBE=32,
        SIMILARITY_MODEL_CACHE_DIR=scratch / "models",
        SIMILARITY_INT8_MIN_COSINE=0.999,
    )
    return scratch


def p50(function, repeats: int = 30) -> float:
    function()
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings)


def main() -> int:
    scratch = configure()
    import numpy as np
    import torch
    from PIL import Image

    from similarity.gallery.images import open_image
    from similarity.runtime.encoders import EfficientNetLite0Encoder, OpenClipEncoder
    from similarity.runtime.variants import select_device

    if select_device("auto") != "cuda":
        print("No CUDA device: nothing to check here.")
        return 1
    print(f"GPU: {torch.cuda.get_device_name(0)}; torch {torch.__version__}")
    torch.manual_seed(0)
    import open_clip

    weights = scratch / "vit-b-32-random.pt"
    torch.save(open_clip.create_model("ViT-B-32", pretrained=None).state_dict(), weights)

    photos = [open_image(path) for path in sorted((ROOT / "sample_gallery/photos").rglob("*.jpg"))]
    ok = True
    encoders = {
        "efficientnet_lite0@384": (
            EfficientNetLite0Encoder(device="cpu", precision="fp32"),
            EfficientNetLite0Encoder(),
        ),
        "ViT-B-32 (random weights)": (
            OpenClipEncoder("ViT-B-32", str(weights), device="cpu", precision="fp32", runtime="torch"),
            OpenClipEncoder("ViT-B-32", str(weights)),
        ),
    }
    for name, (cpu, gpu) in encoders.items():
        gpu.load()
        cosines = np.sum(cpu.embed_images(photos) * gpu.embed_images(photos), axis=1)
        print(
            f"{name:27s} GPU {gpu.device} {gpu.runtime} {gpu.precision} vs CPU fp32: cosine min {cosines.min():.6f} "
            f"median {np.median(cosines):.6f} over {len(photos)} photos"
        )
        ok &= gpu.device == "cuda" and bool(cosines.min() >= 0.999)

    clip = encoders["ViT-B-32 (random weights)"][1]
    naive = OpenClipEncoder("ViT-B-32", str(weights), precision="fp32").load()
    source = Image.open(ROOT / "sample_gallery/photos/berlin/01.jpg").convert("RGB").resize((4000, 3000))
    buffer = io.BytesIO()
    source.save(buffer, "JPEG", quality=92)
    query = buffer.getvalue()

    def naive_query():
        image = open_image(io.BytesIO(query))
        return naive.embed_tensors([naive._preprocess(image).numpy()])

    def optimised_query():
        return clip.embed_images([open_image(io.BytesIO(query), draft_size=clip.draft_size)])

    naive_ms, optimised_ms = p50(naive_query), p50(optimised_query)
    print(
        f"12 MP JPEG, decode + preprocess + model: naive (fp32) {naive_ms:.1f} ms, optimised ({clip.precision}) "
        f"{optimised_ms:.1f} ms, x{naive_ms / optimised_ms:.2f}"
    )
    batch = [clip.preprocess(photos[i % len(photos)]) for i in range(64)]
    per_image = p50(lambda: clip.embed_tensors(batch), repeats=10) / len(batch)
    print(
        f"ViT-B-32 {clip.precision} on the GPU, batch 64: {per_image:.2f} ms per image ({1000 / per_image:.0f} images/s)"
    )

    from datetime import datetime, timezone

    from similarity import index

    vectors = np.random.default_rng(0).standard_normal((20_000, 512)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index.save_index(np.arange(len(vectors)), vectors, encoder=clip.id, built_at=datetime.now(timezone.utc))
    loaded = index.load_index()
    if loaded is None:
        raise RuntimeError("the index just saved did not load")
    _, ids = loaded.search(vectors[:5], 3)
    import faiss

    where = "GPU" if "Gpu" in type(loaded.faiss_index).__name__ else "CPU"
    has_gpu = hasattr(faiss, "index_cpu_to_all_gpus") and faiss.get_num_gpus() > 0
    print(
        f"FAISS {faiss.__version__} ({'GPU support' if has_gpu else 'no GPU support'}): "
        f"index of {loaded.manifest.count} on the {where}, self-match {bool((ids[:, 0] == np.arange(5)).all())}"
    )
    ok &= bool((ids[:, 0] == np.arange(5)).all()) and (where == "GPU") == has_gpu
    print("CUDA paths as expected:", ok)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
