"""End-to-end /api/similar/ latency on a 12-megapixel JPEG: optimised vs naive, in one run.

Both configurations run the same server code (gunicorn, one worker) over the
places gallery, with ViT-B-32 (random weights: same compute as real CLIP):

* naive: the full 12 MP decode, open_clip's preprocessing on it, PyTorch fp32
  (SIMILARITY_JPEG_DRAFT=0 SIMILARITY_PRECISION=fp32 SIMILARITY_RUNTIME=torch);
* optimised: the defaults (JPEG draft decoding; the int8 ONNX Runtime copy on
  CPUs with int8 dot products, bf16 on CPUs with native bf16, else fp32).

Each configuration gets a fresh server; the order alternates over --rounds,
and the speed-up is computed from all of a configuration's requests. The
server's own Server-Timing header gives the median of each stage.

    .venv/bin/python bench/latency.py [--requests 40] [--rounds 2]
"""

import argparse
import io
import json
import statistics
import sys
import time
from collections import defaultdict

import _django

CONFIGS = {
    "naive": {"SIMILARITY_JPEG_DRAFT": "0", "SIMILARITY_PRECISION": "fp32", "SIMILARITY_RUNTIME": "torch"},
    "optimised": {},
}


def twelve_megapixel_jpeg() -> bytes:
    from PIL import Image

    photo = Image.open(_django.PLACES / "berlin/01.jpg").convert("RGB").resize((4000, 3000), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    photo.save(buffer, "JPEG", quality=92)
    return buffer.getvalue()


def parse_server_timing(header: str) -> dict[str, float]:
    stages = {}
    for part in header.split(","):
        name, _, duration = part.strip().partition(";dur=")
        if duration:
            stages[name] = float(duration)
    return stages


def measure(port: int, data: bytes, requests: int, stages: dict | None = None) -> list[float]:
    for _ in range(3):  # warm-up: the first requests pay for lazy imports and caches
        status, _ = _django.post_image(port, "/api/similar/", data)
        assert status == 200, status
    timings = []
    for _ in range(requests):
        headers = {}
        started = time.perf_counter()
        status, body = _django.post_image(port, "/api/similar/", data, headers=headers)
        timings.append((time.perf_counter() - started) * 1000)
        assert status == 200 and json.loads(body)["success"], body[:200]
        if stages is not None:
            for name, duration in parse_server_timing(headers.get("Server-Timing", "")).items():
                stages[name].append(duration)
    return timings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=40, help="requests per configuration and round")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    spec = _django.random_clip_weights()
    data_dir = _django.setup(spec)
    _django.import_places()  # also builds the int8 copy once, as build_clip_index does
    query = twelve_megapixel_jpeg()
    print(f"{_django.machine()}; query: 4000x3000 JPEG, {len(query) / 1e6:.1f} MB; "
          f"{args.rounds} rounds x {args.requests} sequential requests per configuration")
    timings = {name: [] for name in CONFIGS}
    stages = {name: defaultdict(list) for name in CONFIGS}
    runtime = {}
    for round_number in range(args.rounds):
        order = list(CONFIGS) if round_number % 2 == 0 else list(reversed(CONFIGS))
        for name in order:
            with _django.Server(data_dir, spec, port=8123, env=CONFIGS[name]):
                timings[name] += measure(8123, query, args.requests, stages[name])
                runtime[name] = _django.get_json(8123, "/api/stats/")["precision"]
    for name in CONFIGS:
        breakdown = "  ".join(f"{stage} {statistics.median(values):.1f}" for stage, values in stages[name].items())
        print(f"{name:>9} ({runtime[name]}): p50 {statistics.median(timings[name]):7.1f} ms   "
              f"p95 {_django.percentile(timings[name], 95):7.1f} ms   server stages (median ms): {breakdown}")
    speedup = statistics.median(timings["naive"]) / statistics.median(timings["optimised"])
    print(f"p50 speed-up optimised vs naive: x{speedup:.2f} (target >= 3)")
    return 0 if speedup >= 3 else 1


if __name__ == "__main__":
    sys.exit(main())
