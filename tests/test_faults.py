"""Faults: database outages, damaged index files, throttling, kept queries, production settings."""

import os
import subprocess
import sys

import pytest
from rest_framework.test import APIClient

from similarity import index, search, tasks
from similarity.models import ReferencePhoto
from similarity.search import maintenance
from tests.conftest import ROOT, make_image_bytes, upload


def similar(client, seed=1):
    return client.post("/api/similar/", {"image": upload(make_image_bytes(seed))}, format="multipart")


@pytest.mark.django_db(transaction=True)
def test_a_database_outage_is_a_503_with_json_and_the_service_recovers(make_photo, database_down):
    stop, restore = database_down
    photo = make_photo(1)
    tasks.embed_photo(photo.pk)
    client = APIClient()
    assert similar(client).status_code == 200

    stop()
    for response in (similar(client), client.get("/api/stats/"), client.get("/api/photos/")):
        assert response.status_code == 503
        assert response.json() == {
            "success": False,
            "error": "The database is unavailable at the moment; nothing was changed. Try again shortly.",
        }
    assert client.get("/admin/login/").status_code in (200, 503)  # a page, never a 500

    restore()
    response = similar(client)
    assert response.status_code == 200 and response.json()["clip_similarity"]["all_matches"][0]["id"] == photo.pk
    assert ReferencePhoto.objects.count() == 1


def test_a_truncated_index_is_answered_exactly_and_rebuilt_in_the_background(make_photo):
    photos = [make_photo(seed) for seed in range(3)]
    for photo in photos:
        tasks.embed_photo(photo.pk)
    manifest = maintenance.rebuild_index()
    manifest.path.write_bytes(manifest.path.read_bytes()[:200])
    index.forget_loaded_index()
    import io

    from similarity.gallery.images import open_image

    result = search.search_image(open_image(io.BytesIO(make_image_bytes(2))), top_k=3)
    assert result.best.photo == photos[2] and len(result.matches) == 3
    rebuilt = index.read_manifest()  # the queued maintenance ran (tests run tasks synchronously)
    assert rebuilt.build_id != manifest.build_id
    assert index.load_index().manifest.count == 3


def test_lookups_are_throttled_per_client(db, monkeypatch):
    from similarity.api.throttles import LookupThrottle

    monkeypatch.setattr(LookupThrottle, "THROTTLE_RATES", {"lookup": "2/minute"})
    client = APIClient()
    assert [similar(client).status_code for _ in range(2)] == [200, 200]
    response = similar(client)
    assert response.status_code == 429 and "throttled" in response.json()["error"].lower()
    assert 0 < int(response["Retry-After"]) <= 2 * 60  # at most until halfway into the next minute


@pytest.mark.parametrize("keep", [False, True])
def test_query_photos_are_kept_only_when_configured(db, settings, data_dir, keep):
    settings.SIMILARITY_KEEP_QUERIES = keep
    assert similar(APIClient()).status_code == 200
    folder = data_dir / "media" / "queries"
    kept = list(folder.rglob("*")) if folder.exists() else []
    assert len([path for path in kept if path.is_file()]) == (1 if keep else 0)


def run_manage(*args, **env):
    base = {key: value for key, value in os.environ.items() if not key.startswith(("DJANGO_", "DATABASE_URL"))}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**base, "DJANGO_SETTINGS_MODULE": "geolocator.settings", **env},
        timeout=120,
    )


def test_production_settings_pass_the_deploy_check(tmp_path):
    result = run_manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        DJANGO_SECRET_KEY="k3y-" + "x7Qz!p9#Lm2@Vb6$Nc4%Rt8^Wy1&Hs5*" * 2,
        DJANGO_ALLOWED_HOSTS="geolocator.example.org",
        GEOLOCATOR_DATA_DIR=str(tmp_path),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_debug_is_off_and_a_secret_key_is_required_unless_asked_for(tmp_path):
    result = run_manage("check", GEOLOCATOR_DATA_DIR=str(tmp_path))
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "Configuration error: DJANGO_SECRET_KEY is not set; set it (or DJANGO_DEBUG=1 for local development)."
    ]
    debug = run_manage(
        "shell",
        "-c",
        "from django.conf import settings; print(settings.DEBUG)",
        DJANGO_SECRET_KEY="s",
        GEOLOCATOR_DATA_DIR=str(tmp_path),
    )
    assert debug.stdout.strip().splitlines()[-1] == "False"


def test_warm_up_loads_the_encoder_and_index_and_survives_a_damaged_index(make_photo, caplog):
    from similarity.search.vectors import get_encoder
    from similarity.warmup import warm_up

    tasks.embed_photo(make_photo(1).pk)
    manifest = maintenance.rebuild_index()
    warm_up()
    assert get_encoder().is_loaded and index.load_index().manifest.build_id == manifest.build_id
    manifest.path.write_bytes(b"broken")
    index.forget_loaded_index()
    warm_up()  # logs, does not raise: lookups answer exactly from stored vectors
    assert "checksum" in caplog.text
