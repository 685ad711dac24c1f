"""End-to-end /api/similar/ latency on a 12-megapixel JPEG: optimised vs naive, in one run.

Both configurations run the same server code (gunicorn, one worker) over the
places gallery, with ViT-B-32 (random weights: same compute as real CLIP):

* naive: the full 12 MP decode and open_clip's own preprocessing on it, fp32
  weights (SIMILARITY_JPEG_DRAFT=0 SIMILARITY_PRECISION=fp32);
* optimised: the defaults (JPEG draft decoding, bf16 weights where the CPU
  has native bf16).

    .venv/bin/python bench/latency.py [--requests 40]
"""

import argparse
import io
import json
import statistics
import sys
import time

import _django


def twelve_megapixel_jpeg() -> bytes:
    from PIL import Image

    photo = Image.open(_django.PLACES / "berlin/01.jpg").convert("RGB").resize((4000, 3000), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    photo.save(buffer, "JPEG", quality=92)
    return buffer.getvalue()


def measure(port: int, data: bytes, requests: int) -> list[float]:
    for _ in range(3):  # warm-up: model and index load once per process
        status, _ = _django.post_image(port, "/api/similar/", data)
        assert status == 200, status
    timings = []
    for _ in range(requests):
        started = time.perf_counter()
        status, body = _django.post_image(port, "/api/similar/", data)
        timings.append((time.perf_counter() - started) * 1000)
        assert status == 200 and json.loads(body)["success"], body[:200]
    return timings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=40)
    args = parser.parse_args()
    spec = _django.random_clip_weights()
    data_dir = _django.setup(spec)
    _django.import_places()
    query = twelve_megapixel_jpeg()
    print(f"{_django.machine()}; query: 4000x3000 JPEG, {len(query) / 1e6:.1f} MB; {args.requests} sequential requests each")
    configs = {
        "naive": {"SIMILARITY_JPEG_DRAFT": "0", "SIMILARITY_PRECISION": "fp32"},
        "optimised": {},
    }
    results = {}
    for name, extra in configs.items():
        with _django.Server(data_dir, spec, port=8123, env=extra):
            timings = measure(8123, query, args.requests)
        results[name] = (statistics.median(timings), _django.percentile(timings, 95))
        print(f"{name:>9}: p50 {results[name][0]:7.1f} ms   p95 {results[name][1]:7.1f} ms")
    speedup = results["naive"][0] / results["optimised"][0]
    print(f"p50 speed-up optimised vs naive: x{speedup:.2f} (target >= 3)")
    return 0 if speedup >= 3 else 1


if __name__ == "__main__":
    sys.exit(main())
