"""Hostile uploads under load: in-limit decompression bombs mixed with real lookups, against gunicorn.

A gunicorn server (2 workers x 4 threads, as deployed; worker recycling off,
so memory is measured without that safety net) serves the places gallery.
Bombs are tiny files that decode to many pixels: lossless WebP, GIF, RGBA
PNG and HEIC of one flat colour, each just inside SIMILARITY_MAX_LOOKUP_PIXELS
(answered 200), the same at 7745x7745 (the size the audit used, just under
SIMILARITY_MAX_IMAGE_PIXELS: refused from the header, 400), and a 7745x7745
JPEG (decoded at 1/8 scale, 200).

* phase 1: 6 clients send real lookups (the 54 places photos, to
  /api/similar/ and /api/locate/) for --seconds;
* phase 2: the same 6 clients plus 2 attackers sending bombs back to back.

Checked: zero 5xx and every answer as expected; each worker's resident
memory stays below 1.5x its warm size (sampled every 0.5 s; warm = after the
warm-up requests); real lookups' p95 in phase 2 within 2x of phase 1.

    .venv/bin/python bench/hostile.py [--seconds 60] [--encoder clip|efficientnet]
"""

import argparse
import io
import math
import random
import statistics
import sys
import threading
import time

import _django

REAL_CLIENTS, ATTACKERS = 6, 2


def bombs(lookup_pixels: int, header_pixels: int) -> dict[str, tuple[bytes, int]]:
    """name -> (file, expected status)."""
    import pillow_heif
    from PIL import Image

    pillow_heif.register_heif_opener()

    def encode(image, fmt, **options):
        buffer = io.BytesIO()
        image.save(buffer, fmt, **options)
        return buffer.getvalue()

    made = {}
    for label, side, status in (
        ("in-limit", math.isqrt(lookup_pixels) - 1, 200),
        ("7745x7745", math.isqrt(header_pixels - 1), 400),
    ):
        made[f"WebP lossless {label}"] = (encode(Image.new("RGB", (side, side), (40, 90, 160)), "WEBP", lossless=True), status)
        made[f"GIF {label}"] = (encode(Image.new("P", (side, side), 3), "GIF"), status)
        made[f"RGBA PNG {label}"] = (encode(Image.new("RGBA", (side, side), (10, 20, 30, 128)), "PNG", optimize=True), status)
        made[f"HEIC {label}"] = (encode(Image.new("RGB", (side, side), (200, 100, 50)), "HEIF", quality=10), status)
    side = math.isqrt(header_pixels - 1)
    made["JPEG 7745x7745"] = (encode(Image.new("RGB", (side, side), (90, 90, 90)), "JPEG", quality=90), 200)
    return made


def run_phase(server, port, seconds, photos, bomb_files, attackers: int):
    latencies, unexpected, statuses, bomb_times = [], [], {}, []
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds
    peaks: dict[int, int] = {}

    def real_client(number):
        rng = random.Random(number)
        while time.monotonic() < stop_at:
            path = rng.choice(["/api/similar/", "/api/locate/?all=1"])
            began = time.perf_counter()
            try:
                status, _ = _django.post_image(port, path, rng.choice(photos))
            except OSError as exc:
                status = f"connection error: {exc}"
            with lock:
                statuses[status] = statuses.get(status, 0) + 1
                if status == 200:
                    latencies.append((time.perf_counter() - began) * 1000)
                else:
                    unexpected.append(("real lookup", status))

    def attacker(number):
        rng = random.Random(100 + number)
        while time.monotonic() < stop_at:
            name = rng.choice(list(bomb_files))
            data, expected = bomb_files[name]
            began = time.perf_counter()
            try:
                status, _ = _django.post_image(port, rng.choice(["/api/similar/", "/api/locate/"]), data)
            except OSError as exc:
                status = f"connection error: {exc}"
            with lock:
                statuses[status] = statuses.get(status, 0) + 1
                bomb_times.append((time.perf_counter() - began) * 1000)
                if status != expected:
                    unexpected.append((name, status))

    threads = [threading.Thread(target=real_client, args=(i,)) for i in range(REAL_CLIENTS)]
    threads += [threading.Thread(target=attacker, args=(i,)) for i in range(attackers)]
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        for pid, rss in server.rss_by_pid(workers_only=True).items():
            peaks[pid] = max(peaks.get(pid, 0), rss)
        time.sleep(0.5)
    return latencies, unexpected, statuses, peaks, bomb_times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--encoder", choices=["clip", "efficientnet"], default="clip")
    args = parser.parse_args()
    spec = _django.random_clip_weights() if args.encoder == "clip" else "efficientnet_lite0"
    data_dir = _django.prepare_gallery(spec)
    _django.setup(spec)  # only for the settings' limits
    from django.conf import settings

    bomb_files = bombs(settings.SIMILARITY_MAX_LOOKUP_PIXELS, settings.SIMILARITY_MAX_IMAGE_PIXELS)
    photos = [path.read_bytes() for path in sorted(_django.PLACES.rglob("*.jpg"))]
    port = 8126
    env = {"GUNICORN_MAX_REQUESTS": "0"}
    print(f"{_django.machine()}")
    print(f"encoder {args.encoder}; gunicorn 2 workers x 4 threads; {REAL_CLIENTS} real clients, then "
          f"{REAL_CLIENTS} + {ATTACKERS} attackers, {args.seconds:.0f} s each; bombs: "
          + ", ".join(f"{name} ({len(data) / 1000:.0f} kB)" for name, (data, _) in bomb_files.items()))
    with _django.Server(data_dir, spec, port=port, workers=2, threads=4, env=env) as server:
        for _ in range(6):  # warm both workers
            _django.post_image(port, "/api/similar/", photos[0])
            _django.post_image(port, "/api/locate/", photos[1])
        warm = server.rss_by_pid(workers_only=True)
        calm = run_phase(server, port, args.seconds, photos, bomb_files, attackers=0)
        attacked = run_phase(server, port, args.seconds, photos, bomb_files, attackers=ATTACKERS)
    ok = True
    for name, (latencies, unexpected, statuses, peaks, bomb_times) in (("without bombs", calm), ("with bombs", attacked)):
        fivexx = sum(count for status, count in statuses.items() if isinstance(status, int) and status >= 500)
        growth = {pid: peaks[pid] / warm[pid] for pid in peaks if pid in warm}
        print(f"\n{name}: statuses {dict(sorted(statuses.items(), key=str))}; 5xx {fivexx}; unexpected {len(unexpected)}"
              + (f" {unexpected[:5]}" if unexpected else ""))
        print(f"  real lookups: {len(latencies)}, p50 {statistics.median(latencies):.0f} ms, "
              f"p95 {_django.percentile(latencies, 95):.0f} ms")
        if bomb_times:
            print(f"  bombs: {len(bomb_times)}, p50 {statistics.median(bomb_times):.0f} ms, "
                  f"p95 {_django.percentile(bomb_times, 95):.0f} ms")
        print("  worker RSS, warm -> peak: " + "; ".join(
            f"{warm[pid] / 2**20:.0f} -> {peaks[pid] / 2**20:.0f} MiB (x{growth[pid]:.2f})" for pid in growth))
        if set(peaks) - set(warm):
            print(f"  workers that were not there when warm: {sorted(set(peaks) - set(warm))}")
            ok = False
        ok &= fivexx == 0 and not unexpected and all(ratio < 1.5 for ratio in growth.values())
    p95_ratio = _django.percentile(attacked[0], 95) / _django.percentile(calm[0], 95)
    print(f"\nreal lookups' p95 with bombs / without: x{p95_ratio:.2f} (target <= 2)")
    ok &= p95_ratio <= 2
    print("zero 5xx, every answer as expected, each worker below 1.5x its warm size, p95 within 2x:", ok)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
