"""Build throughput: the optimised embedding pipeline vs a naive sequential loop, in one run.

The gallery is the 54 places photos, each also re-encoded at three JPEG
qualities (216 distinct files, sizes from 640x480 to 3264x2448). Encoder:
ViT-B-32 with random weights (the compute of real CLIP; no weights can be
downloaded here).

* naive: per photo, a full decode, open_clip's preprocessing, an fp32 forward
  pass of one image, then store the vector;
* optimised: similarity.tasks.embed_photos, as build_clip_index runs it
  (batches of 32, JPEG draft decoding on threads overlapping inference, the
  runtime SIMILARITY_RUNTIME=auto picks: the int8 ONNX Runtime copy on CPUs
  with int8 dot products, bf16 on CPUs with native bf16, else fp32).

Both run their PyTorch work on the encoder's inference thread, as the service
does. The optimised pipeline also writes each photo's list thumbnail (about
3 ms of a decode thread per photo here), which the naive loop does not.

    .venv/bin/python bench/build_throughput.py
"""

import sys
import time

import _django


def variants(directory):
    """Each places photo plus three re-encodings (distinct bytes, same picture)."""
    from PIL import Image

    paths = []
    for source in sorted(_django.PLACES.rglob("*.jpg")):
        image = Image.open(source)
        exif = image.info.get("exif", b"")
        for quality in (None, 95, 90, 85):
            target = directory / f"{source.parent.name}-{source.stem}-{quality or 'orig'}.jpg"
            if quality is None:
                target.write_bytes(source.read_bytes())
            else:
                image.convert("RGB").save(target, "JPEG", quality=quality, exif=exif)
            paths.append(target)
    return paths


def main() -> int:
    spec = _django.random_clip_weights()
    data_dir = _django.setup(spec)
    import numpy as np
    from PIL import Image, ImageOps

    from similarity.encoders import OpenClipEncoder
    from similarity.importer import ManifestRow, import_photos
    from similarity.models import PhotoEmbedding, ReferencePhoto
    from similarity.tasks import embed_photos

    source_dir = data_dir / "variants"
    source_dir.mkdir()
    paths = variants(source_dir)
    report = import_photos(paths, {path.resolve(): ManifestRow(latitude="0", longitude="0") for path in paths})
    photos = list(ReferencePhoto.objects.order_by("pk"))
    print(f"{_django.machine()}; {len(photos)} photos ({len(report.skipped)} skipped)")

    naive = OpenClipEncoder("ViT-B-32", spec.split("/", 1)[1], precision="fp32", runtime="torch").load()

    def naive_embedding(image):
        # open_clip's own transform (PyTorch ops) and the forward pass on one thread, so the
        # baseline does not pay for a second OpenMP team
        return naive._embed_batch(naive._preprocess(image).numpy()[None])[0]

    started = time.perf_counter()
    for photo in photos:
        with photo.image.open("rb") as handle:
            image = ImageOps.exif_transpose(Image.open(handle)).convert("RGB")
        vector = naive._run_on_inference_thread(naive_embedding, image)
        PhotoEmbedding.objects.update_or_create(
            photo=photo, encoder="naive", defaults={"dim": 512, "vector": vector.astype(np.float32).tobytes(), "source_sha256": photo.sha256}
        )
    naive_rate = len(photos) / (time.perf_counter() - started)

    optimised = OpenClipEncoder("ViT-B-32", spec.split("/", 1)[1]).load()  # builds the int8 copy once, untimed
    started = time.perf_counter()
    result = embed_photos(ReferencePhoto.objects.order_by("pk").iterator(chunk_size=64), optimised, batch_size=32)
    optimised_rate = result.embedded / (time.perf_counter() - started)

    speedup = optimised_rate / naive_rate
    print(f"naive sequential loop: {naive_rate:6.1f} photos/s")
    print(f"optimised pipeline:    {optimised_rate:6.1f} photos/s ({optimised.runtime} {optimised.precision}, batch 32, draft decoding)")
    print(f"build throughput speed-up: x{speedup:.2f} (target >= 4)")
    return 0 if speedup >= 4 else 1


if __name__ == "__main__":
    sys.exit(main())
