"""8 concurrent clients on loopback: errors, throughput, latency and the server's memory over time.

A gunicorn server (2 workers x 4 threads) serves the places gallery with
ViT-B-32 (random weights: the compute of real CLIP). Eight client threads
send, back to back, a mix of /api/similar/ and /api/locate/ uploads (the 54
places photos, 640x480 to 3264x2448, plus a few broken files that must get a
400). Reported: 5xx and other unexpected answers, requests per second, p50 and
p95 latency, and the server's resident memory (all its processes) at minute 1
and at the end.

    .venv/bin/python bench/load.py [--seconds 120] [--clients 8]
"""

import argparse
import random
import statistics
import sys
import threading
import time

import _django


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    spec = _django.random_clip_weights()
    data_dir = _django.setup(spec)
    _django.import_places()
    photos = [path.read_bytes() for path in sorted(_django.PLACES.rglob("*.jpg"))]
    broken = [b"", b"not an image at all", photos[0][:500]]
    port = 8125
    latencies: list[float] = []
    unexpected: list = []
    statuses: dict[int | str, int] = {}
    lock = threading.Lock()
    memory = []
    with _django.Server(data_dir, spec, port=port, workers=2, threads=4) as server:
        for path in ("/api/similar/", "/api/locate/"):  # warm both workers' models
            for _ in range(4):
                _django.post_image(port, path, photos[0])
        started = time.monotonic()
        stop_at = started + args.seconds

        def client(number: int):
            rng = random.Random(number)
            while time.monotonic() < stop_at:
                bad = rng.random() < 0.05
                data = rng.choice(broken) if bad else rng.choice(photos)
                path = rng.choice(["/api/similar/", "/api/locate/?all=1"])
                began = time.perf_counter()
                status: int | str
                try:
                    status, _ = _django.post_image(port, path, data)
                except OSError as exc:
                    status = f"connection error: {exc}"
                elapsed = (time.perf_counter() - began) * 1000
                with lock:
                    statuses[status] = statuses.get(status, 0) + 1
                    if status != (400 if bad else 200):
                        unexpected.append((path, status))
                    elif not bad:
                        latencies.append(elapsed)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
        for thread in threads:
            thread.start()
        while any(thread.is_alive() for thread in threads):
            memory.append((time.monotonic() - started, server.rss_bytes()))
            time.sleep(5)
        duration = time.monotonic() - started
    at_minute = next((rss for t, rss in memory if t >= 60), memory[-1][1])
    end = memory[-1][1]
    growth = (end - at_minute) / at_minute
    total = sum(statuses.values())
    fivexx = sum(count for status, count in statuses.items() if isinstance(status, int) and status >= 500)
    print(f"{_django.machine()}; {args.clients} clients for {args.seconds:.0f} s on loopback")
    print(f"requests {total} ({total / duration:.1f}/s); statuses {dict(sorted(statuses.items(), key=str))}")
    print(
        f"latency of good uploads: p50 {statistics.median(latencies):.0f} ms, p95 {_django.percentile(latencies, 95):.0f} ms"
    )
    print(f"5xx: {fivexx}; unexpected answers: {len(unexpected)}")
    print(
        f"server RSS: {at_minute / 2**20:.0f} MiB at minute 1, {end / 2**20:.0f} MiB at the end ({100 * growth:+.1f}%)"
    )
    ok = fivexx == 0 and not unexpected and growth < 0.10
    print("zero 5xx, every answer as expected, memory growth < 10%:", ok)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
