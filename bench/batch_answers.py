"""Batch geotagging on ../shared/data/places: the answers of `locate_photos` and of a batch through
`/api/batches/` against `/api/locate/` photo by photo, and `locate_photos` on every core against one.

The gallery is the shipped sample gallery (10 photos, offline encoder, geometric verification on); the
queries are the 54 places photos as they are (most carry GPS EXIF) and the same photos with their metadata
removed, so that the gallery has to answer them. Checks: every row of the CSV and the GeoJSON, and every row of
a 20-photo batch, equals the single lookup's final answer and matched photos. Prints the CPU.

    .venv/bin/python bench/batch_answers.py
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _django

ROOT = Path(__file__).resolve().parent.parent


def stripped_copies(folder: Path) -> None:
    from PIL import Image

    for path in sorted(_django.PLACES.rglob("*.jpg")):
        target = folder / path.relative_to(_django.PLACES)
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.open(path).convert("RGB").save(target, "JPEG", quality=92)


def single_answer(client, path: Path) -> tuple:
    from django.core.files.uploadedfile import SimpleUploadedFile

    body = client.post("/api/locate/", {"image": SimpleUploadedFile(path.name, path.read_bytes())}).json()
    final = body["final"] or {}
    matched: list[dict] = next(
        (s["result"]["matches"] for s in body["sources"] if s["result"] and "matches" in s["result"]), []
    )
    return (final.get("latitude"), final.get("longitude"), final.get("confidence"), final.get("source"),
            [match["id"] for match in matched])  # fmt: skip


def number(value) -> float | None:
    return None if value in ("", None) else float(value)


def row_answer(row: dict) -> tuple:
    """A CSV row (text) or a JSON row as the tuple single_answer gives."""
    ids = row["matched_ids"]
    ids = [int(part) for part in ids.split()] if isinstance(ids, str) else list(ids)
    return (number(row["latitude"]), number(row["longitude"]), number(row["confidence"]), row["source"] or None, ids)


def run_command(folder: Path, *args: str) -> float:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "locate_photos", str(folder), "--no-progress", *args],
        check=True,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


def main() -> int:
    os.environ["DJANGO_DEBUG"] = "1"  # the test client speaks plain HTTP to 'testserver'
    os.environ["DJANGO_ALLOWED_HOSTS"] = "testserver"
    os.environ["SIMILARITY_VERIFY"] = "all"
    for budget in ("SIMILARITY_LOOKUP_RATE", "SIMILARITY_LARGE_LOOKUP_RATE", "GEOLOCATOR_BATCH_RATE"):
        os.environ[budget] = "1000000/minute"  # one client asks for every photo here, twice
    _django.setup("efficientnet_lite0@384")
    from django.contrib.auth.models import User
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.core.management import call_command
    from django.test import Client

    from similarity import batches
    from similarity.gallery.importer import find_images, import_photos, read_manifest_csv

    print(_django.machine())
    import_photos(find_images(ROOT / "sample_gallery/photos"), read_manifest_csv(ROOT / "sample_gallery/manifest.csv"))
    call_command("build_clip_index", "--no-progress", stdout=io.StringIO())
    work = Path(tempfile.mkdtemp(prefix="geolocator-batch-"))
    stripped = work / "stripped"
    stripped_copies(stripped)
    client = Client()
    failures = 0

    for label, folder in (("places as they are", _django.PLACES), ("places without metadata", stripped)):
        seconds = run_command(
            folder, "--out", str(work / f"{folder.name}.csv"), "--out", str(work / f"{folder.name}.geojson")
        )
        rows = list(csv.DictReader(open(work / f"{folder.name}.csv")))
        features = json.loads((work / f"{folder.name}.geojson").read_text())["features"]
        same = answered = 0
        for row, feature in zip(rows, features, strict=True):
            single = single_answer(client, Path(row["file"]))
            properties = feature["properties"]
            point = feature["geometry"]["coordinates"] if feature["geometry"] else (None, None)
            as_geojson = (point[1], point[0], properties["confidence"], properties["source"], properties["matched_ids"])
            same += row_answer(row) == single == as_geojson
            answered += single[0] is not None
        failures += same != len(rows)
        print(f"{label}: {len(rows)} photos in {seconds:.1f} s, {answered} answered; CSV and GeoJSON equal to "
              f"/api/locate/ for {same} of {len(rows)}")  # fmt: skip

    user = User.objects.create_user("batch-bench")
    client.force_login(user)
    photos = sorted(stripped.rglob("*.jpg"))[::2][:20]
    uploads = [SimpleUploadedFile(path.name, path.read_bytes()) for path in photos]
    body = client.post("/api/batches/", {"files": uploads}).json()
    batches.locate_pending(body["id"])  # what the worker's task does
    rows = client.get(body["url"]).json()["results"]
    same = sum(row_answer(row) == single_answer(client, path) for row, path in zip(rows, photos, strict=True))
    failures += same != len(photos)
    print(f"a batch of {len(photos)} through /api/batches/: equal to /api/locate/ for {same} of {len(photos)}")

    one = run_command(stripped, "--out", str(work / "one.csv"), "--workers", "1")
    every = run_command(stripped, "--out", str(work / "every.csv"))
    same_rows = (work / "one.csv").read_text() == (work / "every.csv").read_text()
    print(f"locate_photos, 54 photos without metadata: one at a time {one:.1f} s, one per core ({os.cpu_count()}) "
          f"{every:.1f} s: x{one / every:.2f}; same rows: {same_rows}")  # fmt: skip
    return 1 if failures or not same_rows else 0


if __name__ == "__main__":
    sys.exit(main())
