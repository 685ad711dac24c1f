"""Shared setup for bench scripts: a throw-away data dir and SQLite database, then django.setup()."""

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PLACES = (ROOT.parent / "shared" / "data" / "places").resolve()


def setup(encoder: str | None = None) -> Path:
    sys.path.insert(0, str(ROOT))
    data_dir = Path(tempfile.mkdtemp(prefix="geolocator-bench-"))
    os.environ["GEOLOCATOR_DATA_DIR"] = str(data_dir)
    os.environ.pop("DATABASE_URL", None)
    os.environ.setdefault("DJANGO_SECRET_KEY", "bench-only")
    os.environ.setdefault("SIMILARITY_LOG_LEVEL", "WARNING")
    if encoder:
        os.environ["SIMILARITY_ENCODER"] = encoder
    os.environ["DJANGO_SETTINGS_MODULE"] = "geolocator.settings"
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    return data_dir


def import_places():
    """Import and embed ../shared/data/places; returns {photo id: place label}."""
    import csv
    import hashlib
    import io

    from django.core.management import call_command

    from similarity.importer import find_images, import_photos, read_manifest_csv

    manifest_path = PLACES / "manifest.csv"
    report = import_photos(find_images(PLACES), read_manifest_csv(manifest_path))
    call_command("build_clip_index", "--no-progress", stdout=io.StringIO())
    place_by_sha = {
        hashlib.sha256((PLACES / row["file"]).read_bytes()).hexdigest(): row["place"]
        for row in csv.DictReader(open(manifest_path))
    }
    return {photo.pk: place_by_sha[photo.sha256] for photo in report.imported}
