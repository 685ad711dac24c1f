"""/api/batches/: many photos (or zips of them) located in the background with the answers single lookups give,
held to limits on photos, bytes, open batches and the client's budget, each refusal naming its limit."""

import csv
import io
import json
import os
import zipfile
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from similarity import batches
from similarity.models import BatchPhoto, LocateBatch, RequestCounter
from tests.conftest import SAMPLE_GALLERY, gps_exif, make_image_bytes, upload
from tests.test_locate_photos import without_exif


@pytest.fixture
def signed_in(client, db):
    user = User.objects.create_user("reporter", password="x")
    client.force_login(user)
    return client


def twenty_photos() -> list[tuple[str, bytes]]:
    """The sample gallery's ten scenes without their GPS, five photos with GPS, five pictures of nowhere."""
    gallery = sorted((SAMPLE_GALLERY / "photos").rglob("*.jpg"))
    photos = [(f"scene-{i}.jpg", without_exif(path.read_bytes())) for i, path in enumerate(gallery)]
    photos += [(f"gps-{i}.jpg", make_image_bytes(i, exif=gps_exif(10 + i, 20 + i))) for i in range(5)]
    photos += [(f"nowhere-{i}.png", make_image_bytes(100 + i, fmt="PNG")) for i in range(5)]
    assert len(photos) == 20
    return photos


def files(photos) -> list[SimpleUploadedFile]:
    return [upload(data, name) for name, data in photos]


def zipped(photos, name="photos.zip", **members) -> SimpleUploadedFile:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for member, data in [*photos, *members.items()]:
            archive.writestr(member, data)
    return SimpleUploadedFile(name, buffer.getvalue(), content_type="application/zip")


def send(client, uploads, capture, **options):
    """POST a batch; the worker's task runs when the request's transaction commits."""
    with capture(execute=True):
        return client.post("/api/batches/", {"files": uploads, **options})


def test_a_batch_of_twenty_finishes_with_the_answers_of_single_lookups(
    sample_gallery, signed_in, django_capture_on_commit_callbacks
):
    photos = twenty_photos()
    response = send(signed_in, files(photos), django_capture_on_commit_callbacks)
    assert response.status_code == 202, response.content
    batch = signed_in.get(response.json()["url"]).json()
    assert (batch["status"], batch["total"], batch["done"]) == ("done", 20, 20)
    rows = {row["file"]: row for row in batch["results"]}
    answered = 0
    for name, data in photos:
        single = signed_in.post("/api/locate/", {"image": upload(data, name)}).json()["final"]
        row = rows[name]
        if single is None:
            assert row["latitude"] is None and row["reason"]
            continue
        answered += 1
        assert (row["latitude"], row["longitude"], row["confidence"], row["radius_m"], row["source"]) == (
            single["latitude"],
            single["longitude"],
            single["confidence"],
            single["radius_m"],
            single["source"],
        )
    assert answered >= 15  # the GPS photos and the gallery's scenes


def test_a_zip_gives_the_same_rows_as_its_photos(sample_gallery, signed_in, django_capture_on_commit_callbacks):
    photos = twenty_photos()[8:14]
    one_by_one = send(signed_in, files(photos), django_capture_on_commit_callbacks).json()
    as_zip = send(signed_in, [zipped(photos, **{"__MACOSX/._x.jpg": b"fork"})], django_capture_on_commit_callbacks)
    assert as_zip.status_code == 202, as_zip.content
    first, second = (signed_in.get(body["url"]).json()["results"] for body in (one_by_one, as_zip.json()))
    assert first == second and len(first) == 6


def test_results_download_as_csv_and_geojson(sample_gallery, signed_in, django_capture_on_commit_callbacks):
    body = send(signed_in, files(twenty_photos()[10:13]), django_capture_on_commit_callbacks).json()
    as_csv = signed_in.get(body["downloads"]["csv"])
    assert as_csv["Content-Type"].startswith("text/csv") and "attachment" in as_csv["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(as_csv.content.decode())))
    as_geojson = json.loads(signed_in.get(body["downloads"]["geojson"]).content)
    assert [row["file"] for row in rows] == [f["properties"]["file"] for f in as_geojson["features"]]
    assert float(rows[0]["latitude"]) == as_geojson["features"][0]["geometry"]["coordinates"][1] == pytest.approx(10)


def test_the_uploaded_files_are_dropped_once_located(sample_gallery, signed_in, django_capture_on_commit_callbacks):
    send(signed_in, files(twenty_photos()[10:12]), django_capture_on_commit_callbacks)
    assert not BatchPhoto.objects.exclude(file="").exists()
    assert not stored_batch_files()


def test_a_setting_keeps_the_uploaded_files(sample_gallery, signed_in, settings, django_capture_on_commit_callbacks):
    settings.GEOLOCATOR_BATCH_KEEP_UPLOADS = True
    send(signed_in, files(twenty_photos()[10:12]), django_capture_on_commit_callbacks)
    assert all(default_storage.exists(name) for name in BatchPhoto.objects.values_list("file", flat=True))


def test_a_task_run_again_locates_only_the_photos_left(sample_gallery, signed_in, monkeypatch):
    response = signed_in.post("/api/batches/", {"files": files(twenty_photos()[10:14])})  # no worker ran
    batch_id = response.json()["id"]
    first = BatchPhoto.objects.filter(batch_id=batch_id).order_by("position").first()
    first.result = {"file": first.name, "latitude": 1.0}  # located before its worker died
    first.save()
    LocateBatch.objects.filter(pk=batch_id).update(done=1)
    located = []
    real = batches.locate_photo
    monkeypatch.setattr(
        batches, "locate_photo", lambda name, data, **kw: located.append(name) or real(name, data, **kw)
    )
    assert batches.locate_pending(batch_id)["outcome"] == "done"
    assert located == ["gps-1.jpg", "gps-2.jpg", "gps-3.jpg"]
    assert LocateBatch.objects.get(pk=batch_id).done == 4


def test_another_client_cannot_see_or_delete_a_batch(
    sample_gallery, signed_in, client, django_capture_on_commit_callbacks
):
    body = send(signed_in, files(twenty_photos()[10:11]), django_capture_on_commit_callbacks).json()
    client.force_login(User.objects.create_user("someone-else", password="x"))
    assert client.get(body["url"]).status_code == 404
    assert client.delete(body["url"]).status_code == 404
    assert client.get("/api/batches/").json()["batches"] == []


def test_deleting_a_batch_drops_its_results_and_files(
    sample_gallery, signed_in, settings, django_capture_on_commit_callbacks
):
    settings.GEOLOCATOR_BATCH_KEEP_UPLOADS = True
    body = send(signed_in, files(twenty_photos()[10:12]), django_capture_on_commit_callbacks).json()
    names = list(BatchPhoto.objects.values_list("file", flat=True))
    with django_capture_on_commit_callbacks(execute=True):
        assert signed_in.delete(body["url"]).status_code == 204
    assert not LocateBatch.objects.exists() and not any(default_storage.exists(name) for name in names)


def test_anonymous_clients_cannot_send_batches(db, client):
    response = client.post("/api/batches/", {"files": files(twenty_photos()[10:11])})
    assert response.status_code == 403 and response.json()["success"] is False


def stored_batch_files() -> list:
    folder = Path(settings.MEDIA_ROOT) / "batches"
    return [path for path in folder.rglob("*") if path.is_file()] if folder.exists() else []


def error_of(response) -> str:
    return response.json()["error"]


def test_too_many_photos_are_refused_naming_the_limit(signed_in, settings):
    settings.GEOLOCATOR_BATCH_MAX_FILES = 3
    response = signed_in.post("/api/batches/", {"files": files(twenty_photos()[10:14])})
    assert response.status_code == 400 and "at most 3 files" in error_of(response)
    zipped_four = signed_in.post("/api/batches/", {"files": [zipped(twenty_photos()[10:14])]})
    assert zipped_four.status_code == 400 and "at most 3 photos" in error_of(zipped_four)
    assert not LocateBatch.objects.exists()


def test_too_many_bytes_are_refused_naming_the_limit(signed_in, settings):
    photos = twenty_photos()[10:14]
    settings.GEOLOCATOR_BATCH_MAX_BYTES = sum(len(data) for _, data in photos) - 1
    as_zip = signed_in.post("/api/batches/", {"files": [zipped(photos)]})
    assert as_zip.status_code == 400 and "of photos in all" in error_of(as_zip)
    settings.GEOLOCATOR_BATCH_MAX_BYTES = 2048
    streamed = signed_in.post("/api/batches/", {"files": files(photos)})
    assert streamed.status_code == 400 and "A batch takes at most 2 KiB of photos in all" in error_of(streamed)
    declared = signed_in.post(
        "/api/batches/", b"x" * 70_000, content_type="multipart/form-data; boundary=x"
    )  # refused from its Content-Length, before a byte is read
    assert declared.status_code == 400 and "a batch takes at most 2 KiB" in error_of(declared)


def test_a_photo_over_the_upload_limit_is_refused_naming_it(signed_in, settings):
    settings.SIMILARITY_MAX_UPLOAD_BYTES = 4096
    noise = io.BytesIO()
    Image.frombytes("RGB", (64, 64), os.urandom(64 * 64 * 3)).save(noise, "PNG")
    big = ("big.png", noise.getvalue())
    response = signed_in.post("/api/batches/", {"files": [zipped([big])]})
    assert (
        response.status_code == 400
        and "big.png" in error_of(response)
        and "at most 4 KiB a photo" in error_of(response)
    )


def test_a_zip_bomb_is_refused(signed_in):
    bomb = zipped([("flat.jpg", b"\0" * 5_000_000)])
    response = signed_in.post("/api/batches/", {"files": [bomb]})
    assert response.status_code == 400 and "zip bomb" in error_of(response)


@pytest.mark.parametrize("member", ["../../etc/cron.d/x.jpg", "/etc/x.jpg", "C:/x.jpg"])
def test_a_zip_path_that_climbs_out_is_refused(signed_in, member):
    response = signed_in.post("/api/batches/", {"files": [zipped([(member, make_image_bytes(1))])]})
    assert response.status_code == 400 and "leaves the zip" in error_of(response)


def test_a_file_that_is_no_photo_is_refused_and_nothing_is_stored(signed_in):
    response = signed_in.post(
        "/api/batches/", {"files": files([("ok.jpg", make_image_bytes(1)), ("notes.jpg", b"hello")])}
    )
    assert response.status_code == 400 and "notes.jpg" in error_of(response)
    assert not LocateBatch.objects.exists() and not stored_batch_files()


def test_open_batches_per_client_are_limited_with_a_429(signed_in, settings):
    settings.GEOLOCATOR_BATCH_OPEN_PER_CLIENT = 1
    assert signed_in.post("/api/batches/", {"files": files(twenty_photos()[10:11])}).status_code == 202  # no worker
    second = signed_in.post("/api/batches/", {"files": files(twenty_photos()[11:12])})
    assert second.status_code == 429 and "unfinished batch" in error_of(second)


def test_the_budget_counts_each_photos_lookup_and_refuses_with_a_429(signed_in, monkeypatch, settings):
    from similarity.api import pricing, throttles

    settings.SIMILARITY_VERIFY = "all"
    per_photo = pricing.price(pricing.UPLOAD).units
    monkeypatch.setattr(throttles.BatchThrottle, "THROTTLE_RATES", {"batch": f"{3 * per_photo}/day"})
    RequestCounter.objects.all().delete()
    first = signed_in.post("/api/batches/", {"files": files(twenty_photos()[10:12])})
    assert first.status_code == 202 and first.json()["cost"] == 2 * per_photo
    second = signed_in.post("/api/batches/", {"files": files(twenty_photos()[12:14])})
    assert second.status_code == 429 and "batch budget" in error_of(second) and "Retry-After" in second
    too_dear = signed_in.post("/api/batches/", {"files": files(twenty_photos()[10:14])})
    assert too_dear.status_code == 400 and "batch budget" in error_of(too_dear)


def test_two_batches_sent_at_once_cannot_both_pass_the_open_batch_limit(transactional_db, settings, monkeypatch):
    """Each request counts the client's open batches after writing its own, under a lock on the client's row: of
    two sent at the same moment (each waiting for the other while it stores its photos), one is refused."""
    import threading

    from django.db import connections
    from django.test import Client

    settings.GEOLOCATOR_BATCH_OPEN_PER_CLIENT = 1
    monkeypatch.setattr(batches, "queue_batch", lambda batch_id: None)  # no worker: both stay open
    both_storing = threading.Barrier(2)
    real_read = batches.PlannedPhoto.read

    def read_once_both_are_here(photo):
        try:
            both_storing.wait(timeout=2)  # without the lock both get here; with it, the second waits for the first
        except threading.BrokenBarrierError:
            pass
        return real_read(photo)

    monkeypatch.setattr(batches.PlannedPhoto, "read", read_once_both_are_here)
    user = User.objects.create_user("twice", password="x")
    statuses = []

    def send_one(seed):
        client = Client()
        client.force_login(user)
        try:
            statuses.append(
                client.post("/api/batches/", {"files": files([("a.jpg", make_image_bytes(seed))])}).status_code
            )
        finally:
            connections.close_all()

    threads = [threading.Thread(target=send_one, args=(seed,)) for seed in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(statuses) == [202, 429]
    assert LocateBatch.objects.filter(owner=user).count() == 1
