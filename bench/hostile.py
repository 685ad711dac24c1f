"""Hostile uploads under load: in-limit decompression bombs mixed with real lookups, against gunicorn.

A gunicorn server (2 workers x 4 threads, as deployed; worker recycling off,
so memory is measured without that safety net) serves the places gallery
behind one trusted proxy (DJANGO_NUM_PROXIES=1: each client's address comes
from X-Forwarded-For, as a reverse proxy would write it), with the default
per-client budgets (120 lookups a minute, 10 that need a large decode).
Bombs are tiny files that decode to many pixels: lossless WebP, GIF, RGBA
PNG and HEIC of one flat colour, each just inside SIMILARITY_MAX_LOOKUP_PIXELS
(answered 200, or 429 once the client's large-decode budget is spent), the
same at 7745x7745 (the size the audit used, just under
SIMILARITY_MAX_IMAGE_PIXELS: refused from the header, 400 or 429), and a
7745x7745 JPEG (decoded at 1/8 scale: 200 or 429).

* phase 1: 6 people look photos up (the 54 places photos, to /api/similar/
  and /api/locate/, without geometric verification: one a second is 60 of
  their 120 units a minute), each at most one lookup a second, for --seconds;
* phase 2: the same 6 people, and 2 attackers (other addresses) sending
  bombs back to back;
* phase 3: the same, but the attackers change address on every request, as
  a botnet would: no per-client budget stops them, so every bomb is decoded.

Checked: zero 5xx and every answer as expected in every phase; each
worker's resident memory stays below 1.5x its warm size (sampled every
0.5 s; warm = after the warm-up requests); real lookups' p95 in phase 2
within 2x of phase 1. Phase 3's latency is reported, not checked: bombs from
everywhere are a matter of capacity, which the memory bound keeps safe.

The CPU-attack mix (``--mix cpu``, issue 26) prices what lookups cost and
what one client can take:

* first, each kind of lookup is sent a few times alone, and the workers' CPU
  time per request is read from /proc (a plain upload lookup, a verified one,
  a stored photo's neighbours with ``verify=all&top_k=50``), against the
  units the budget charges for it (api/pricing.py);
* phase "people": CPU_PEOPLE people send default lookups (verified uploads
  to /api/similar/), each at most one every CPU_PACE_SECONDS;
* phase "people + one client at its budget": the same, and one client (one
  address, 8 threads) sends ``GET /api/photos/<id>/similar/?verify=all&top_k=50``
  back to back, waiting out each 429's Retry-After as a client that uses all
  of its budget does.

Checked: zero 5xx; the people's p95 with the busy client within 2x of
without; the busy client's share of the workers' CPU is reported.

    .venv/bin/python bench/hostile.py [--seconds 60] [--encoder clip|efficientnet] [--mix bombs|cpu|all]
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
PACE_SECONDS = 1.0  # a person looks up at most one photo a second
# Three people, each at most one default (verified, 9-unit) lookup every 6 s: 90 of their 120 units a minute.
CPU_PEOPLE, CPU_PACE_SECONDS, BUSY_THREADS = 3, 6.0, 8
BUSY_QUERY = "?verify=all&top_k=50"


def bombs(lookup_pixels: int, header_pixels: int) -> dict[str, tuple[bytes, set[int]]]:
    """name -> (file, expected status)."""
    import pillow_heif
    from PIL import Image

    pillow_heif.register_heif_opener()

    def encode(image, fmt, **options):
        buffer = io.BytesIO()
        image.save(buffer, fmt, **options)
        return buffer.getvalue()

    made: dict[str, tuple[bytes, int]] = {}
    for label, side, status in (
        ("in-limit", math.isqrt(lookup_pixels) - 1, 200),
        ("7745x7745", math.isqrt(header_pixels - 1), 400),
    ):
        made[f"WebP lossless {label}"] = (
            encode(Image.new("RGB", (side, side), (40, 90, 160)), "WEBP", lossless=True),
            status,
        )
        made[f"GIF {label}"] = (encode(Image.new("P", (side, side), 3), "GIF"), status)
        made[f"RGBA PNG {label}"] = (
            encode(Image.new("RGBA", (side, side), (10, 20, 30, 128)), "PNG", optimize=True),
            status,
        )
        made[f"HEIC {label}"] = (encode(Image.new("RGB", (side, side), (200, 100, 50)), "HEIF", quality=10), status)
    side = math.isqrt(header_pixels - 1)
    made["JPEG 7745x7745"] = (encode(Image.new("RGB", (side, side), (90, 90, 90)), "JPEG", quality=90), 200)
    return {name: (data, {status, 429}) for name, (data, status) in made.items()}  # 429: the budget is spent


def paced_lookups(port, photos, rng, address, paths, fields, pace, stop_at, record) -> None:
    """One client's lookups of random photos until ``stop_at``, at most one every ``pace`` seconds;
    ``record(status, milliseconds)`` after each."""
    while time.monotonic() < stop_at:
        began = time.perf_counter()
        status: int | str
        try:
            status, _ = _django.post_image(
                port, rng.choice(paths), rng.choice(photos), request_headers=address, fields=fields
            )
        except OSError as exc:
            status = f"connection error: {exc}"
        record(status, (time.perf_counter() - began) * 1000)
        time.sleep(max(0.0, pace - (time.perf_counter() - began)))


def run_phase(server, port, seconds, photos, bomb_files, attackers: int, phase: int, rotate: bool = False):
    latencies: list[float] = []
    unexpected: list = []
    statuses: dict[int | str, int] = {}
    bomb_times: list[float] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds
    peaks: dict[int, int] = {}

    def record(status, milliseconds):
        with lock:
            statuses[status] = statuses.get(status, 0) + 1
            if status == 200:
                latencies.append(milliseconds)
            else:
                unexpected.append(("real lookup", status))

    def real_client(number):
        address = {"X-Forwarded-For": f"198.51.{110 + phase}.{number + 1}"}  # budgets fresh in each phase
        paths = ["/api/similar/", "/api/locate/?all=1"]
        paced_lookups(
            port, photos, random.Random(number), address, paths, {"verify": "off"}, PACE_SECONDS, stop_at, record
        )

    def attacker(number):
        rng = random.Random(100 + number)
        address = {"X-Forwarded-For": f"203.0.113.{number + 1}"}
        sent = 0
        while time.monotonic() < stop_at:
            if rotate:
                sent += 1
                address = {"X-Forwarded-For": f"10.{number}.{sent // 250 % 250}.{sent % 250 + 1}"}
            name = rng.choice(list(bomb_files))
            data, expected = bomb_files[name]
            began = time.perf_counter()
            try:
                status, _ = _django.post_image(
                    port, rng.choice(["/api/similar/", "/api/locate/"]), data, request_headers=address
                )
            except OSError as exc:
                status = f"connection error: {exc}"
            with lock:
                statuses[status] = statuses.get(status, 0) + 1
                bomb_times.append((time.perf_counter() - began) * 1000)
                if status not in expected:
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
    parser.add_argument("--mix", choices=["bombs", "cpu", "all"], default="all")
    args = parser.parse_args()
    spec = _django.random_clip_weights() if args.encoder == "clip" else "efficientnet_lite0@384"
    data_dir = _django.prepare_gallery(spec)
    _django.setup(spec)  # only for the settings' limits
    from django.conf import settings

    bomb_files = bombs(settings.SIMILARITY_MAX_LOOKUP_PIXELS, settings.SIMILARITY_MAX_IMAGE_PIXELS)
    photos = [path.read_bytes() for path in sorted(_django.PLACES.rglob("*.jpg"))]
    port = 8126
    env = {
        "GUNICORN_MAX_REQUESTS": "0",
        "DJANGO_NUM_PROXIES": "1",
        "SIMILARITY_LOOKUP_RATE": "120/minute",
        "SIMILARITY_LARGE_LOOKUP_RATE": "10/minute",
    }
    print(f"{_django.machine()}")
    print(
        f"encoder {args.encoder}; gunicorn 2 workers x 4 threads behind one trusted proxy; {args.seconds:.0f} s a phase"
    )
    if args.mix in ("bombs", "all"):
        print(
            f"bombs: {REAL_CLIENTS} people (one lookup a second at most), then {REAL_CLIENTS} + {ATTACKERS} attackers; "
            + ", ".join(f"{name} ({len(data) / 1000:.0f} kB)" for name, (data, _) in bomb_files.items())
        )
    if args.mix in ("cpu", "all"):
        print(
            f"CPU: {CPU_PEOPLE} people (a default lookup every {CPU_PACE_SECONDS:.0f} s at most), then the same and "
            f"one client from {BUSY_THREADS} threads: GET /api/photos/<id>/similar/{BUSY_QUERY}"
        )
    ok = True
    with _django.Server(data_dir, spec, port=port, workers=2, threads=4, env=env) as server:
        for number in range(6):  # warm both workers
            warm_up = {"X-Forwarded-For": f"192.0.2.{number + 1}"}
            _django.post_image(port, "/api/similar/", photos[0], request_headers=warm_up)
            _django.post_image(port, "/api/locate/", photos[1], request_headers=warm_up)
        if args.mix in ("bombs", "all"):
            ok &= bomb_mix(server, port, args.seconds, photos, bomb_files)
        if args.mix in ("cpu", "all"):
            ok &= cpu_mix(server, port, args.seconds, photos)
    print(f"\nevery check passed: {ok}")
    return 0 if ok else 1


def bomb_mix(server, port, seconds, photos, bomb_files) -> bool:
    warm = server.rss_by_pid(workers_only=True)
    calm = run_phase(server, port, seconds, photos, bomb_files, attackers=0, phase=1)
    attacked = run_phase(server, port, seconds, photos, bomb_files, attackers=ATTACKERS, phase=2)
    botnet = run_phase(server, port, seconds, photos, bomb_files, attackers=ATTACKERS, phase=3, rotate=True)
    ok = True
    phases = (("without bombs", calm), ("with bombs", attacked), ("with bombs from ever-new addresses", botnet))
    for name, (latencies, unexpected, statuses, peaks, bomb_times) in phases:
        fivexx = count_5xx(statuses)
        growth = {pid: peaks[pid] / warm[pid] for pid in peaks if pid in warm}
        print(
            f"\n{name}: statuses {dict(sorted(statuses.items(), key=str))}; 5xx {fivexx}; unexpected {len(unexpected)}"
            + (f" {unexpected[:5]}" if unexpected else "")
        )
        print(
            f"  real lookups: {len(latencies)}, p50 {statistics.median(latencies):.0f} ms, "
            f"p95 {_django.percentile(latencies, 95):.0f} ms"
        )
        if bomb_times:
            print(
                f"  bombs: {len(bomb_times)}, p50 {statistics.median(bomb_times):.0f} ms, "
                f"p95 {_django.percentile(bomb_times, 95):.0f} ms"
            )
        print(
            "  worker RSS, warm -> peak: "
            + "; ".join(
                f"{warm[pid] / 2**20:.0f} -> {peaks[pid] / 2**20:.0f} MiB (x{growth[pid]:.2f})" for pid in growth
            )
        )
        if set(peaks) - set(warm):
            print(f"  workers that were not there when warm: {sorted(set(peaks) - set(warm))}")
            ok = False
        ok &= fivexx == 0 and not unexpected and all(ratio < 1.5 for ratio in growth.values())
    p95_ratio = _django.percentile(attacked[0], 95) / _django.percentile(calm[0], 95)
    print(f"\nreal lookups' p95 with bombs / without: x{p95_ratio:.2f} (target <= 2)")
    ok &= p95_ratio <= 2
    print("bombs: zero 5xx, every answer as expected, each worker below 1.5x its warm size, p95 within 2x:", ok)
    return ok


def count_5xx(statuses) -> int:
    return sum(count for status, count in statuses.items() if isinstance(status, int) and status >= 500)


def worker_cpu_seconds(server) -> float:
    """User + system CPU time of the server's workers so far (every thread), from /proc."""
    import os

    total = 0
    for pid in server.pids():
        if pid == server.process.pid:
            continue
        try:
            fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / os.sysconf("SC_CLK_TCK")


def get(port: int, path: str, headers: dict) -> tuple[int, dict]:
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    try:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        response.read()
        return response.status, dict(response.getheaders())
    finally:
        connection.close()


def lookup_costs(server, port, photos, photo_id) -> dict[str, tuple[float, int]]:
    """Workers' CPU seconds per request for each kind of lookup, sent alone five times, and its price in units
    (1 for every lookup on code from before lookups were priced, so the script measures that code too)."""
    try:
        from similarity.api import pricing
    except ImportError:
        pricing = unpriced()

    def upload(address, **fields):
        headers = {"X-Forwarded-For": address}  # a client of its own: the budget lasts
        return lambda: _django.post_image(port, "/api/similar/", photos[2], request_headers=headers, fields=fields)

    kinds = {
        "upload, verify=off": (upload("192.0.2.90", verify="off"), pricing.price(pricing.UPLOAD, verify="off")),
        "upload, default verification": (upload("192.0.2.91"), pricing.price(pricing.UPLOAD)),
        "stored photo, verify=all&top_k=50": (
            lambda: get(port, f"/api/photos/{photo_id}/similar/{BUSY_QUERY}", {"X-Forwarded-For": "192.0.2.92"}),
            pricing.price(pricing.STORED, top_k=50, verify="all"),
        ),
    }
    costs = {}
    for name, (send, price) in kinds.items():
        send()  # warm
        before = worker_cpu_seconds(server)
        for _ in range(5):
            status = send()[0]
            assert status == 200, (name, status)
        costs[name] = ((worker_cpu_seconds(server) - before) / 5, price.units)
    return costs


def unpriced():
    """A stand-in for api/pricing.py where every lookup costs 1."""
    from types import SimpleNamespace

    return SimpleNamespace(
        UPLOAD="upload", STORED="stored", price=lambda *args, **kwargs: SimpleNamespace(units=1, pairs=0)
    )


def cpu_phase(server, port, seconds, photos, photo_id, busy: bool, phase: int):
    latencies: list[float] = []
    statuses: dict[int | str, int] = {}
    busy_statuses: dict[int | str, int] = {}
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def record(status, milliseconds):
        with lock:
            statuses[status] = statuses.get(status, 0) + 1
            if status == 200:
                latencies.append(milliseconds)

    def person(number):
        rng = random.Random(number)
        address = {"X-Forwarded-For": f"198.51.{100 + phase}.{number + 1}"}  # budgets fresh in each phase
        time.sleep(rng.random() * CPU_PACE_SECONDS)  # people do not start together
        paced_lookups(port, photos, rng, address, ["/api/similar/"], {}, CPU_PACE_SECONDS, stop_at, record)

    def busy_client():
        address = {"X-Forwarded-For": "203.0.113.50"}
        while time.monotonic() < stop_at:
            try:
                status, headers = get(port, f"/api/photos/{photo_id}/similar/{BUSY_QUERY}", address)
            except OSError as exc:
                status, headers = f"connection error: {exc}", {}
            with lock:
                busy_statuses[status] = busy_statuses.get(status, 0) + 1
            if status == 429:
                time.sleep(min(float(headers.get("Retry-After", 1)), max(0.0, stop_at - time.monotonic())))

    threads = [threading.Thread(target=person, args=(i,)) for i in range(CPU_PEOPLE)]
    if busy:
        threads += [threading.Thread(target=busy_client) for _ in range(BUSY_THREADS)]
    cpu_before = worker_cpu_seconds(server)
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, statuses, busy_statuses, worker_cpu_seconds(server) - cpu_before


def cpu_mix(server, port, seconds, photos) -> bool:
    photo_id = _django.get_json(port, "/api/photos/")["results"][0]["id"]
    print("\nCPU per lookup (workers' user + system time, 5 requests each, sent alone):")
    costs = lookup_costs(server, port, photos, photo_id)
    per_unit = max(cpu / units for cpu, units in costs.values())
    for name, (cpu, units) in costs.items():
        print(f"  {name}: {cpu:.2f} CPU-s, {units} unit(s), {cpu / units:.3f} CPU-s per unit")
    from django.conf import settings

    rate = settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["lookup"]
    budget = int(rate.split("/")[0])
    print(
        f"  one client at its full lookup budget ({rate} units) costs at most {budget * per_unit:.0f} CPU-s a "
        f"minute: {budget * per_unit / 60 / 2 * 100:.0f} % of a 2-core server"
    )
    calm = cpu_phase(server, port, seconds, photos, photo_id, busy=False, phase=1)
    loaded = cpu_phase(server, port, seconds, photos, photo_id, busy=True, phase=2)
    ok = True
    for name, (latencies, statuses, busy_statuses, cpu) in (
        ("people", calm),
        ("people + one client at its budget", loaded),
    ):
        print(
            f"\n{name}: people's statuses {dict(sorted(statuses.items(), key=str))}, "
            f"p50 {statistics.median(latencies):.0f} ms, p95 {_django.percentile(latencies, 95):.0f} ms; "
            f"workers' CPU {cpu:.0f} s in {seconds:.0f} s ({cpu / seconds / 2 * 100:.0f} % of 2 cores)"
        )
        if busy_statuses:
            print(f"  the busy client's statuses: {dict(sorted(busy_statuses.items(), key=str))}")
        ok &= count_5xx(statuses) == 0 and count_5xx(busy_statuses) == 0
        ok &= set(busy_statuses) <= {200, 429}
    ratio = _django.percentile(loaded[0], 95) / _django.percentile(calm[0], 95)
    print(f"\npeople's p95 with the busy client / without: x{ratio:.2f} (target <= 2)")
    ok &= ratio <= 2
    print("CPU mix: zero 5xx, the busy client gets only 200 and 429, people's p95 within 2x:", ok)
    return ok


if __name__ == "__main__":
    sys.exit(main())
