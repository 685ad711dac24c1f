"""What /api/stats/ costs PostgreSQL at a million photos, counted afresh and from the per-process cache.

A scratch PostgreSQL database gets N reference photos (active and ready, a few
pending, failed or inactive), a vector record and a features record for each
(stats count rows; the vectors themselves are 8 bytes here), written by
``INSERT ... SELECT generate_series``. Then, in one process:

* ``gallery_stats()`` computed afresh (every count read from the tables): median of 5;
* ``GET /api/stats/`` with the default SIMILARITY_STATS_CACHE_SECONDS: the first call
  computes, the next 50 are answered from the cache (median per call);
* the database time the endpoint costs per second of calls: one fresh count per
  cache period per process, whatever the number of callers.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres .venv/bin/python bench/stats_scale.py [--photos 1000000]

The database named in DATABASE_URL is only used to create and drop the scratch one.
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from urllib.parse import urlparse, urlunparse

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SCRATCH = "geolocator_stats_bench"


def fill(cursor, photos: int) -> None:
    cursor.execute(
        """
        INSERT INTO similarity_referencephoto
            (image, width, height, title, address, latitude, longitude, notes, source, license, sha256, is_active,
             embedding_status, embedding_error, created, updated, tile_x, tile_y)
        SELECT 'reference/' || i || '.jpg', 640, 480, 'Photo ' || i, '', (mod(i, 170)) - 85.0, (mod(i, 350)) - 175.0,
               '', '', '', md5(i::text) || md5((i + 1)::text), mod(i, 97) <> 0,
               CASE WHEN mod(i, 1000) = 0 THEN 'pending' WHEN mod(i, 1001) = 0 THEN 'failed' ELSE 'ready' END,
               '', now(), now(), mod(i, 4096), mod(i, 4093)
        FROM generate_series(1, %s) AS i
        """,
        [photos],
    )
    cursor.execute(
        """
        INSERT INTO similarity_photoembedding (photo_id, encoder, dim, vector, source_sha256, created, updated)
        SELECT id, 'efficientnet_lite0@384', 2, '\\x0000000000000000'::bytea, sha256, now(), now()
        FROM similarity_referencephoto WHERE embedding_status = 'ready'
        """
    )
    cursor.execute(
        """
        INSERT INTO similarity_photofeatures (photo_id, source_sha256, file, count, size, updated)
        SELECT id, sha256, 'features/' || id || '.npz', 2000, 150000, now() FROM similarity_referencephoto
        """
    )
    cursor.execute("ANALYZE")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=1_000_000)
    args = parser.parse_args()
    admin_url = os.environ.get("DATABASE_URL", "")
    if not admin_url.startswith("postgres"):
        print("Set DATABASE_URL to a PostgreSQL server (the scratch database is made there).")
        return 2
    import psycopg2

    admin = psycopg2.connect(admin_url)
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS {SCRATCH}")
        cursor.execute(f"CREATE DATABASE {SCRATCH}")
    os.environ["DATABASE_URL"] = urlunparse(urlparse(admin_url)._replace(path=f"/{SCRATCH}"))
    os.environ.setdefault("GEOLOCATOR_DATA_DIR", "/tmp/geolocator-stats-bench")
    os.environ.setdefault("DJANGO_SECRET_KEY", "bench")
    os.environ["DJANGO_SETTINGS_MODULE"] = "geolocator.settings"
    os.environ["SIMILARITY_ENCODER"] = "efficientnet_lite0@384"
    os.environ["SIMILARITY_LOG_LEVEL"] = "WARNING"
    os.environ["DJANGO_ALLOWED_HOSTS"] = "testserver"
    os.environ["DJANGO_SECURE_SSL_REDIRECT"] = "0"
    os.environ["SIMILARITY_READ_RATE"] = "1000000/minute"
    try:
        import django
        from django.core.management import call_command
        from django.db import connection

        django.setup()
        call_command("migrate", verbosity=0)
        from _django import machine

        print(machine())
        started = time.perf_counter()
        with connection.cursor() as cursor:
            fill(cursor, args.photos)
        print(f"{args.photos:,} photos, vectors and features records written in {time.perf_counter() - started:.0f} s")
        from django.conf import settings
        from django.test import Client

        from similarity import stats

        timings = []
        for _ in range(5):
            began = time.perf_counter()
            fresh = stats.gallery_stats()
            timings.append(time.perf_counter() - began)
        print(f"gallery_stats() afresh: median {statistics.median(timings) * 1000:.0f} ms (5 runs); {fresh['photos']}")

        period = settings.SIMILARITY_STATS_CACHE_SECONDS
        stats.forget_cached_stats()
        client = Client()
        began = time.perf_counter()
        assert client.get("/api/stats/").status_code == 200
        first = time.perf_counter() - began
        cached = []
        for _ in range(50):
            began = time.perf_counter()
            assert client.get("/api/stats/").status_code == 200
            cached.append(time.perf_counter() - began)
        per_call = statistics.median(cached)
        print(
            f"GET /api/stats/ with a {period:.0f} s cache: first call {first * 1000:.0f} ms, then median "
            f"{per_call * 1000:.1f} ms per call (x{statistics.median(timings) / per_call:.0f} cheaper than afresh)"
        )
        print(
            f"database time for the counts: at most {statistics.median(timings) / period * 100:.1f} % of one "
            f"database core per web process, however many calls (one fresh count per {period:.0f} s)"
        )
    finally:
        from django.db import connections

        connections.close_all()
        with admin.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {SCRATCH}")
        admin.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
