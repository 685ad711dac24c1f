"""Media in an S3-compatible bucket: a real SeaweedFS server (tests/servers.py). Photos, thumbnails, local
features and the shared FAISS snapshot live in the bucket, the data dir holds none of them, and /media/ applies
the access rules before streaming an object or redirecting to a presigned URL."""

import urllib.request
import uuid
from io import StringIO

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.files.storage import default_storage
from django.core.management import CommandError, call_command

from geolocator.media_storage import media_storages
from similarity import index, media
from similarity.models import ReferencePhoto
from similarity.search import features, maintenance, search_image, shared_index
from tests.conftest import make_image_bytes, upload


class Bucket:
    """This test's part of the bucket, read with boto3 directly."""

    def __init__(self, server, prefix: str):
        self.client, self.name, self.prefix = server.client(), server.bucket, prefix

    def keys(self) -> set[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.name, Prefix=self.prefix + "/")
        return {item["Key"].removeprefix(self.prefix + "/") for page in pages for item in page.get("Contents", [])}

    def read(self, name: str) -> bytes:
        return self.client.get_object(Bucket=self.name, Key=f"{self.prefix}/{name}")["Body"].read()


@pytest.fixture
def on_s3(settings, s3_server, monkeypatch):
    """Media under a new prefix of the session's SeaweedFS bucket, configured as an operator would (environment)."""
    settings.SIMILARITY_INDEX_SHARED = True
    return switch_to_bucket(s3_server, monkeypatch, settings)


def test_the_embedded_default_is_the_data_dir(monkeypatch):
    monkeypatch.delenv("GEOLOCATOR_MEDIA_STORAGE", raising=False)
    storages, on_s3 = media_storages()
    assert not on_s3 and storages["default"]["BACKEND"] == "django.core.files.storage.FileSystemStorage"


@pytest.mark.parametrize("location", ["http://bucket/x", "s3://", "s3:///prefix", "s3://bucket/x?acl=public"])
def test_a_bad_storage_location_stops_start_up_with_one_line(monkeypatch, location):
    monkeypatch.setenv("GEOLOCATOR_MEDIA_STORAGE", location)
    with pytest.raises(ImproperlyConfigured, match="GEOLOCATOR_MEDIA_STORAGE=.*expected local or s3://bucket/prefix"):
        media_storages()


def test_a_photo_its_thumbnails_and_features_go_to_the_bucket_not_the_data_dir(
    on_s3, data_dir, settings, make_photo, django_capture_on_commit_callbacks
):
    settings.SIMILARITY_VERIFY = "all"
    with django_capture_on_commit_callbacks(execute=True):  # the embedding task, run as the worker would
        photo = make_photo(seed=3)
    photo.refresh_from_db()
    assert photo.embedding_status == "ready"
    keys = on_s3.keys()
    assert photo.image.name in keys
    assert any(key.startswith("thumbnails/") for key in keys)
    assert features.storage_name(photo) in keys
    assert on_s3.read(photo.image.name) == make_image_bytes(3)
    assert not (data_dir / "media").exists()


def test_media_urls_stay_on_the_app_so_access_rules_apply(on_s3, client, make_photo):
    photo = make_photo()
    assert photo.image.url == f"/media/{photo.image.name}"
    assert client.get(f"/api/photos/{photo.pk}/").json()["image_url"].endswith(f"/media/{photo.image.name}")


def test_media_are_streamed_from_the_bucket_by_the_access_rules(on_s3, client, make_photo):
    photo = make_photo(seed=5)
    response = client.get(f"/media/{photo.image.name}")
    assert response.status_code == 200 and response["Content-Type"] == "image/jpeg"
    assert b"".join(response.streaming_content) == make_image_bytes(5)
    assert int(response["Content-Length"]) == len(make_image_bytes(5)) and response["Last-Modified"]
    ReferencePhoto.objects.filter(pk=photo.pk).update(is_active=False)
    assert client.get(f"/media/{photo.image.name}").status_code == 404


def test_a_stored_file_no_photo_owns_is_not_served(on_s3, client, make_photo):
    make_photo()
    default_storage.save("queries/2026-12-06/kept.img", upload(b"someone's query"))
    assert client.get("/media/queries/2026-12-06/kept.img").status_code == 404
    assert client.get("/media/reference/nothing-here.jpg").status_code == 404


def test_redirects_go_to_a_short_lived_presigned_url_that_works(on_s3, client, make_photo, settings):
    settings.GEOLOCATOR_MEDIA_REDIRECT = True
    photo = make_photo(seed=6)
    response = client.get(f"/media/{photo.image.name}")
    assert response.status_code == 302
    target = response["Location"]
    assert "X-Amz-Signature=" in target and "X-Amz-Expires=300" in target
    assert response["Cache-Control"] == "private, max-age=150"  # never cached past the signature's life
    with urllib.request.urlopen(target, timeout=30) as answer:
        assert answer.read() == make_image_bytes(6)
    unsigned = target.split("?")[0]
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(unsigned, timeout=30)  # the bucket is private: only the signature opens it
    ReferencePhoto.objects.filter(pk=photo.pk).update(is_active=False)
    assert client.get(f"/media/{photo.image.name}").status_code == 404  # no signature for what is not shown


def test_two_uploads_of_one_file_name_keep_both(on_s3, db):
    first = ReferencePhoto.objects.create(image=upload(make_image_bytes(1), "IMG_0001.jpg"), latitude=1, longitude=1)
    second = ReferencePhoto.objects.create(image=upload(make_image_bytes(2), "IMG_0001.jpg"), latitude=2, longitude=2)
    assert first.image.name != second.image.name
    assert on_s3.read(first.image.name) == make_image_bytes(1)


def test_a_built_index_is_published_and_a_host_without_it_fetches_it(on_s3, sample_gallery, settings, tmp_path):
    built = maintenance.rebuild_index()
    assert shared_index.published_manifest() == built
    assert f"index/{built.build_id}/{built.file}" in on_s3.keys()
    settings.SIMILARITY_INDEX_DIR = tmp_path / "another-host"  # empty, as a new web host's
    index.forget_loaded_index()
    assert shared_index.fetch_if_newer() == "fetched"
    assert index.load_index().manifest == built
    assert shared_index.fetch_if_newer() == "up to date"
    query = sample_gallery[0]
    with query.image.open("rb") as handle:
        from similarity.gallery.images import open_image

        assert search_image(open_image(handle)).matches[0].photo == query


def test_a_host_that_finds_nothing_published_asks_the_worker_for_a_build_once(on_s3, db, monkeypatch, tmp_path):
    queued = []
    monkeypatch.setattr("django_q.tasks.async_task", lambda func, *args, **kwargs: queued.append((func, kwargs)))
    monkeypatch.setattr(maintenance, "_asked_for", set())  # as in a new process

    assert shared_index.fetch_if_newer() == "nothing published"
    assert shared_index.fetch_if_newer() == "nothing published"

    assert queued == [("similarity.tasks.maintain_index", {"task_name": "build an index to share"})]


def test_a_damaged_published_index_is_refused_and_the_host_keeps_its_own(on_s3, sample_gallery, settings, tmp_path):
    first = maintenance.rebuild_index()
    settings.SIMILARITY_INDEX_DIR = tmp_path / "another-host"
    index.forget_loaded_index()
    shared_index.fetch_if_newer()
    second = maintenance.rebuild_index()  # published by "the worker" (same process, other folder)
    on_s3.client.put_object(
        Bucket=on_s3.name, Key=f"{on_s3.prefix}/index/{second.build_id}/{second.file}", Body=b"junk"
    )
    settings.SIMILARITY_INDEX_DIR = tmp_path / "third-host"
    with pytest.raises(index.IndexCorrupt):
        shared_index.fetch_if_newer()
    assert index.read_manifest() is None and not list((tmp_path / "third-host").glob("index-*"))
    assert first.build_id != second.build_id


def test_maintenance_publishes_a_snapshot_the_bucket_lacks(on_s3, sample_gallery, settings):
    settings.SIMILARITY_INDEX_SHARED = False
    built = maintenance.rebuild_index()  # before sharing was turned on
    settings.SIMILARITY_INDEX_SHARED = True
    assert shared_index.published_manifest() is None
    assert maintenance.maintain().index == maintenance.PUBLISHED
    assert shared_index.published_manifest() == built
    assert maintenance.maintain().index == maintenance.UP_TO_DATE


def test_only_the_last_two_published_builds_are_kept(on_s3, sample_gallery):
    builds = [maintenance.rebuild_index().build_id for _ in range(4)]
    published = {key.split("/")[1] for key in on_s3.keys() if key.startswith("index/") and key.count("/") == 2}
    assert published == set(builds[-2:])


def local_gallery(make_photo, settings, django_capture_on_commit_callbacks) -> list[ReferencePhoto]:
    """Photos embedded with their thumbnails and features, all in the local media folder."""
    settings.SIMILARITY_VERIFY = "all"
    with django_capture_on_commit_callbacks(execute=True):
        return [make_photo(seed=seed) for seed in (1, 2)]


def test_copy_to_shared_moves_the_media_folder_into_the_bucket_and_verifies_it(
    make_photo, settings, data_dir, s3_server, monkeypatch, client, django_capture_on_commit_callbacks
):
    photos = local_gallery(make_photo, settings, django_capture_on_commit_callbacks)
    local = sorted(media.files_under(data_dir / "media"))
    assert any(name.startswith("features/") for name in local) and any(name.startswith("thumb") for name in local)
    bucket = switch_to_bucket(s3_server, monkeypatch, settings)
    out = StringIO()
    call_command("copy_to_shared", "--media", "--no-progress", stdout=out)
    assert f"Media: {len(local)} file(s) in {data_dir / 'media'}: {len(local)} copied, 0 already" in out.getvalue()
    assert "Media: all 4 file(s) the database names are in the bucket." in out.getvalue()  # 2 photos, 2 features
    assert bucket.keys() == set(local)
    assert all(bucket.read(name) == (data_dir / "media" / name).read_bytes() for name in local)
    again = StringIO()
    call_command("copy_to_shared", "--media", "--no-progress", stdout=again)
    assert f"0 copied, {len(local)} already in the bucket" in again.getvalue()
    response = client.get(f"/media/{photos[0].image.name}")
    assert b"".join(response.streaming_content) == make_image_bytes(1)


def test_copy_to_shared_names_the_files_the_bucket_still_lacks(
    make_photo, settings, data_dir, s3_server, monkeypatch, django_capture_on_commit_callbacks
):
    photos = local_gallery(make_photo, settings, django_capture_on_commit_callbacks)
    (data_dir / "media" / photos[1].image.name).unlink()  # lost before the move
    switch_to_bucket(s3_server, monkeypatch, settings)
    with pytest.raises(CommandError, match=r"^1 of the 4 files the database names are not in the bucket: "):
        call_command("copy_to_shared", "--media", "--no-progress", stdout=StringIO())


def test_copy_to_shared_refuses_while_media_are_local(db):
    with pytest.raises(CommandError, match="GEOLOCATOR_MEDIA_STORAGE is local"):
        call_command("copy_to_shared", "--media", stdout=StringIO())


def switch_to_bucket(s3_server, monkeypatch, settings) -> Bucket:
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    for name, value in s3_server.environment(prefix).items():
        monkeypatch.setenv(name, value)
    settings.STORAGES, _ = media_storages()
    return Bucket(s3_server, prefix)


def test_not_serving_media_from_a_bucket_is_reported(settings):
    from similarity.checks import media_in_a_bucket_are_served

    settings.GEOLOCATOR_SERVE_MEDIA, settings.MEDIA_ON_S3 = False, True
    assert [warning.id for warning in media_in_a_bucket_are_served(None)] == ["similarity.W003"]
    settings.GEOLOCATOR_SERVE_MEDIA = True
    assert media_in_a_bucket_are_served(None) == []


def test_copy_to_shared_stops_with_one_line_when_the_bucket_refuses_the_keys(
    make_photo, settings, s3_server, monkeypatch, django_capture_on_commit_callbacks
):
    local_gallery(make_photo, settings, django_capture_on_commit_callbacks)
    switch_to_bucket(s3_server, monkeypatch, settings)
    monkeypatch.setenv("GEOLOCATOR_S3_SECRET_KEY", "not-the-key")
    settings.STORAGES, _ = media_storages()
    with pytest.raises(CommandError, match="^Copying to the bucket stopped: ClientError: ") as error:
        call_command("copy_to_shared", "--media", "--no-progress", stdout=StringIO())
    assert "\n" not in str(error.value)
