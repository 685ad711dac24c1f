"""End-to-end /api/similar/ latency on a 12-megapixel JPEG, optimised vs naive, for both encoders, in one run.

For each encoder -- ViT-B-32 (random weights: the compute of real CLIP) and
the offline EfficientNet-Lite0 -- the places gallery is imported and indexed
in its own data dir, then the same server code (gunicorn, one worker) answers
in two configurations:

* naive: the full 12 MP decode, the model's own preprocessing on it (open_clip's
  transform for CLIP), PyTorch fp32
  (SIMILARITY_JPEG_DRAFT=0 SIMILARITY_PRECISION=fp32 SIMILARITY_RUNTIME=torch);
* optimised: the defaults (JPEG draft decoding; the runtime SIMILARITY_RUNTIME=auto
  measured for this CPU when the gallery was built).

Both without geometric verification, so the ratio is the model path's. Then
the defaults as served, with verification of the top 20 (SIMILARITY_VERIFY=all),
and with verification stopping at the first verified match (first).

Each configuration gets a fresh server; the order alternates over --rounds,
and the speed-up is computed from all of a configuration's requests. The
server's own Server-Timing header gives the median of each stage. Targets:
ViT-B-32 x3 on CPUs with int8 dot products (VNNI, AMX), x2.5 on the others;
EfficientNet-Lite0 x3; with verification, p50 under 1 s and at most 3x the
optimised lookup without it, and at most 0.8 CPU-seconds of the server per
verified lookup (user + system time of its processes over the measured
requests). The local features' storage per photo comes from /api/stats/. SIMILARITY_CPU_FLAGS=avx2 makes the
runtime choice as if on an AVX2-only CPU (the kernels are still this CPU's).

    .venv/bin/python bench/latency.py [--requests 40] [--rounds 2] [--encoders clip,efficientnet]
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
    "naive": {
        "SIMILARITY_JPEG_DRAFT": "0",
        "SIMILARITY_PRECISION": "fp32",
        "SIMILARITY_RUNTIME": "torch",
        "SIMILARITY_VERIFY": "off",
    },
    "optimised": {"SIMILARITY_VERIFY": "off"},
    "verified": {"SIMILARITY_VERIFY": "all"},
    "verified-first": {"SIMILARITY_VERIFY": "first"},
}
VERIFIED_P50_LIMIT_MS = 1000.0
VERIFIED_P50_RATIO_LIMIT = 3.0  # verified p50 over the optimised lookup's without verification
VERIFIED_CPU_LIMIT_S = 0.8  # server CPU per verified lookup


def encoders() -> dict:
    """name -> (spec, p50 speed-up target on this CPU class)."""
    int8 = _django.cpu_class() == "int8-dot"
    return {
        "clip": (_django.random_clip_weights(), 3.0 if int8 else 2.5),
        "efficientnet": ("efficientnet_lite0@384", 3.0),
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


def measure(port: int, data: bytes, requests: int, stages: dict | None = None, server=None, cpu=None) -> list[float]:
    for _ in range(3):  # warm-up: the first requests pay for lazy imports and caches
        status, _ = _django.post_image(port, "/api/similar/", data)
        assert status == 200, status
    timings = []
    cpu_before = server.cpu_seconds() if server is not None else 0.0
    for _ in range(requests):
        headers: dict[str, str] = {}
        started = time.perf_counter()
        status, body = _django.post_image(port, "/api/similar/", data, headers=headers)
        timings.append((time.perf_counter() - started) * 1000)
        assert status == 200 and json.loads(body)["success"], body[:200]
        if stages is not None:
            for name, duration in parse_server_timing(headers.get("Server-Timing", "")).items():
                stages[name].append(duration)
    if server is not None and cpu is not None:
        cpu.append((server.cpu_seconds() - cpu_before) / requests)
    return timings


def run_encoder(name: str, spec: str, target: float, query: bytes, args) -> bool:
    data_dir = _django.prepare_gallery(spec)
    timings: dict[str, list[float]] = {config: [] for config in CONFIGS}
    stages: dict[str, defaultdict[str, list[float]]] = {config: defaultdict(list) for config in CONFIGS}
    runtime, verification = {}, {}
    cpu: dict[str, list[float]] = {config: [] for config in CONFIGS}
    for round_number in range(args.rounds):
        order = list(CONFIGS) if round_number % 2 == 0 else list(reversed(CONFIGS))
        for config in order:
            with _django.Server(data_dir, spec, port=8123, env=CONFIGS[config]) as server:
                timings[config] += measure(8123, query, args.requests, stages[config], server, cpu[config])
                stats = _django.get_json(8123, "/api/stats/")
                runtime[config], verification = stats["runtime_variant"], stats["verification"]
    print(f"\n{name} ({spec if not spec.startswith('open_clip:') else 'open_clip:ViT-B-32, random weights'}):")
    for config in CONFIGS:
        breakdown = "  ".join(f"{stage} {statistics.median(values):.1f}" for stage, values in stages[config].items())
        print(
            f"  {config:>9} ({runtime[config]}): p50 {statistics.median(timings[config]):7.1f} ms   "
            f"p95 {_django.percentile(timings[config], 95):7.1f} ms   server CPU {statistics.mean(cpu[config]):.2f} s"
            f"/lookup   server stages (median ms): {breakdown}"
        )
    speedup = statistics.median(timings["naive"]) / statistics.median(timings["optimised"])
    print(f"  p50 speed-up optimised vs naive: x{speedup:.2f} (target >= {target})")
    verified_p50 = statistics.median(timings["verified"])
    ratio = verified_p50 / statistics.median(timings["optimised"])
    verified_cpu = statistics.mean(cpu["verified"])
    print(
        f"  with verification of the top {verification['top_n']}: p50 {verified_p50:.0f} ms "
        f"(x{ratio:.2f} of the lookup without; targets < {VERIFIED_P50_LIMIT_MS:.0f} ms and <= "
        f"x{VERIFIED_P50_RATIO_LIMIT:g}), server CPU {verified_cpu:.2f} s a lookup (target <= {VERIFIED_CPU_LIMIT_S} s)"
    )
    print(
        f"  local features: {verification['photos_with_features']} photos, {verification['features_bytes'] / 1e6:.1f} MB, "
        f"{verification['mean_bytes_per_photo'] / 1e3:.0f} kB and {verification['mean_keypoints']} keypoints per photo"
    )
    return (
        speedup >= target
        and verified_p50 < VERIFIED_P50_LIMIT_MS
        and ratio <= VERIFIED_P50_RATIO_LIMIT
        and verified_cpu <= VERIFIED_CPU_LIMIT_S
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=40, help="requests per configuration and round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--encoders", default="clip,efficientnet")
    args = parser.parse_args()
    query = twelve_megapixel_jpeg()
    print(f"{_django.machine()}")
    print(
        f"query: 4000x3000 JPEG, {len(query) / 1e6:.1f} MB; {args.rounds} rounds x {args.requests} sequential "
        f"requests per configuration; gunicorn 1 worker x 4 threads"
    )
    table = encoders()
    ok = True
    for name in args.encoders.split(","):
        spec, target = table[name]
        ok &= run_encoder(name, spec, target, query, args)
    print(f"\nevery target met: {ok}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
