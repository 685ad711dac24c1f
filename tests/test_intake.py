"""Adding a photo: the same cases through each of the four ways in (admin form, admin bulk upload, API, importer).

Each way answers in its own form (a page, messages, JSON, a report); the
adapters below read that answer back as added / duplicate / rejected, so one
table of cases specifies all four.
"""

import io
import os

import pytest
from django.contrib.messages import get_messages
from django.core.management import call_command
from django.db import DatabaseError
from rest_framework.test import APIClient

from similarity.models import ReferencePhoto
from tests.conftest import gps_exif, make_curator, make_image_bytes, upload

ROME = (41.8902, 12.4922)


def added_or_not(before: set[int]) -> ReferencePhoto | None:
    new = ReferencePhoto.objects.exclude(pk__in=before)
    return new.get() if new.exists() else None


def via_admin_form(client, data: bytes, coordinates, tmp_path):
    fields = {
        "title": "",
        "address": "",
        "notes": "",
        "source": "",
        "license": "",
        "is_active": "on",
        "_save": "Save",
        "latitude": "",
        "longitude": "",
    }
    if coordinates:
        fields["latitude"], fields["longitude"] = map(str, coordinates)
    response = client.post("/admin/similarity/referencephoto/add/", {"image": upload(data, "photo.jpg"), **fields})
    errors = response.context["adminform"].form.errors.as_text() if response.status_code == 200 else ""
    return errors


def via_bulk_upload(client, data: bytes, coordinates, tmp_path):
    assert coordinates is None  # the bulk upload takes each photo's GPS EXIF
    response = client.post("/admin/similarity/referencephoto/bulk-upload/", {"images": [upload(data, "photo.jpg")]})
    return " ".join(str(message) for message in get_messages(response.wsgi_request) if "Skipped" in str(message))


def via_api(client, data: bytes, coordinates, tmp_path):
    fields = dict(zip(("latitude", "longitude"), map(str, coordinates))) if coordinates else {}
    response = client.post("/api/photos/", {"image": upload(data, "photo.jpg"), **fields}, format="multipart")
    return "" if response.status_code == 201 else response.json()["error"]


def via_importer(client, data: bytes, coordinates, tmp_path):
    folder = tmp_path / f"import-{len(os.listdir(tmp_path))}"
    folder.mkdir()
    (folder / "photo.jpg").write_bytes(data)
    arguments = [str(folder), "--no-progress"]
    if coordinates:
        (folder / "manifest.csv").write_text("file,latitude,longitude\nphoto.jpg,{},{}\n".format(*coordinates))
        arguments += ["--manifest", str(folder / "manifest.csv")]
    out = io.StringIO()
    call_command("import_photos", *arguments, stdout=out)
    return "" if "Imported 1" in out.getvalue() else out.getvalue()


PATHS = {"admin form": via_admin_form, "bulk upload": via_bulk_upload, "api": via_api, "importer": via_importer}
TAKES_COORDINATES = ["admin form", "api", "importer"]


@pytest.fixture
def add(request, admin_client, db, tmp_path):
    """add(data, coordinates=None) through the path under test -> (new photo or None, what it said)."""
    name = request.param
    if name == "api":
        client = APIClient()
        client.force_authenticate(make_curator())
    else:
        client = admin_client

    def run(data: bytes, coordinates=None):
        before = set(ReferencePhoto.objects.values_list("pk", flat=True))
        said = PATHS[name](client, data, coordinates, tmp_path)
        return added_or_not(before), said

    run.path = name
    return run


ALL = pytest.mark.parametrize("add", list(PATHS), indirect=True)
WITH_COORDINATES = pytest.mark.parametrize("add", TAKES_COORDINATES, indirect=True)


@ALL
def test_a_photo_with_gps_exif_is_added_where_it_was_taken(add):
    photo, said = add(make_image_bytes(1, exif=gps_exif(*ROME)))

    assert photo is not None, said
    assert (round(photo.latitude, 4), round(photo.longitude, 4)) == ROME
    assert photo.embedding_status == "pending" and photo.title  # queued; titled after the file when no title is given


@ALL
def test_a_photo_without_coordinates_or_gps_exif_is_rejected(add):
    photo, said = add(make_image_bytes(2))

    assert photo is None and "no usable GPS EXIF" in said


@ALL
def test_a_duplicate_is_refused_naming_the_photo_already_there(add):
    first, _ = add(make_image_bytes(3, exif=gps_exif(*ROME)))

    again, said = add(make_image_bytes(3, exif=gps_exif(*ROME)))

    assert first is not None and again is None
    assert f"already in the gallery as photo {first.pk}" in said


@ALL
def test_a_file_that_is_not_an_image_is_rejected(add):
    photo, said = add(b"GIF89a but not really")

    assert photo is None and "not an image" in said


@ALL
def test_no_file_is_left_behind_when_the_photo_cannot_be_stored(add, monkeypatch, settings):
    def database_down(*args, **kwargs):
        raise DatabaseError("the database went away")

    monkeypatch.setattr("django.db.models.Model.save_base", database_down)
    with pytest.raises(DatabaseError):
        add(make_image_bytes(4, exif=gps_exif(*ROME)))

    stored = [name for _, _, names in os.walk(settings.MEDIA_ROOT) for name in names]
    assert not stored and not ReferencePhoto.objects.exists()


@WITH_COORDINATES
def test_given_coordinates_win_over_gps_exif(add):
    photo, said = add(make_image_bytes(5, exif=gps_exif(*ROME)), (10.5, -20.25))

    assert photo is not None, said
    assert (photo.latitude, photo.longitude) == (10.5, -20.25)


@WITH_COORDINATES
def test_coordinates_out_of_range_are_rejected(add):
    photo, said = add(make_image_bytes(6, exif=gps_exif(*ROME)), (91, 0))

    assert photo is None and "Latitude must be a finite number between -90 and 90" in said


@ALL
def test_each_file_is_hashed_once(add, monkeypatch):
    import similarity.gallery.intake
    from similarity import models

    calls = []
    original = models.sha256_of_file

    def counting(file):
        calls.append(file)
        return original(file)

    monkeypatch.setattr(models, "sha256_of_file", counting)
    monkeypatch.setattr(similarity.gallery.intake, "sha256_of_file", counting)

    photo, said = add(make_image_bytes(7, exif=gps_exif(*ROME)))

    assert photo is not None, said
    assert len(calls) == 1


def test_every_file_picker_offers_every_accepted_format(admin_client):
    from similarity.gallery.images import ACCEPTED_EXTENSIONS

    pages = {
        "the lookup page": admin_client.get("/").content.decode(),
        "the admin form": admin_client.get("/admin/similarity/referencephoto/add/").content.decode(),
        "the bulk upload": admin_client.get("/admin/similarity/referencephoto/bulk-upload/").content.decode(),
    }
    for where, page in pages.items():
        accept = page.split('accept="', 1)[1].split('"', 1)[0]
        assert set(ACCEPTED_EXTENSIONS) <= set(accept.split(",")), where
    assert "HEIC" in pages["the lookup page"]
