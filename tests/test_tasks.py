"""Background work, run synchronously (tests/settings.py): retries, maintenance, compaction."""

from datetime import timedelta

import pytest
from django.utils import timezone
from django_q.models import Schedule

from similarity import index, search, tasks
from similarity.models import PhotoEmbedding, ReferencePhoto
from similarity.search import embedding, maintenance
from similarity.search.vectors import get_encoder
from tests.conftest import make_image_bytes, upload


def no_retry_scheduled():
    return not Schedule.objects.filter(func="similarity.tasks.embed_photo").exists()


def test_embedding_twice_is_a_no_op(make_photo):
    photo = make_photo(1)
    assert tasks.embed_photo(photo.pk) == {"photo": photo.pk, "outcome": "embedded"}
    stored = PhotoEmbedding.objects.get(photo=photo).updated
    assert tasks.embed_photo(photo.pk) == {"photo": photo.pk, "outcome": "up to date"}
    assert PhotoEmbedding.objects.get(photo=photo).updated == stored


def test_a_transient_failure_is_recorded_and_retried_with_backoff(make_photo, monkeypatch, caplog):
    photo = make_photo(1)
    missing = FileNotFoundError(2, "No such file or directory", "/srv/geolocator/media/" + photo.image.name)
    monkeypatch.setattr(type(photo.image), "open", lambda self, mode="rb": (_ for _ in ()).throw(missing))
    result = tasks.embed_photo(photo.pk)
    monkeypatch.undo()
    assert result["outcome"] == "failed" and result["retry_in_seconds"] == 30
    photo.refresh_from_db()
    assert photo.embedding_status == "failed"
    assert photo.embedding_error == "Could not read the image file (No such file or directory)."
    assert "/srv/geolocator/media/" in caplog.text  # the path is logged, never shown
    retry = Schedule.objects.get(func="similarity.tasks.embed_photo")
    assert retry.args == f"({photo.pk}, None, 2, False)"
    assert timedelta(seconds=25) < retry.next_run - timezone.now() <= timedelta(seconds=30)


def test_backoff_grows_and_retries_are_bounded(make_photo, monkeypatch, settings):
    photo = make_photo(1)
    monkeypatch.setattr(type(photo.image), "open", lambda self, mode="rb": (_ for _ in ()).throw(OSError("gone")))
    assert [tasks.retry_delay(n) for n in (1, 2)] == [30, 120]
    last = tasks.embed_photo(photo.pk, None, settings.SIMILARITY_EMBED_MAX_ATTEMPTS)
    assert last["outcome"] == "failed" and last["retry_in_seconds"] is None  # giving up
    assert no_retry_scheduled()


def test_a_file_that_is_not_an_image_fails_without_retries(make_photo):
    photo = make_photo(1)
    with open(photo.image.path, "wb") as handle:
        handle.write(b"junk")
    result = tasks.embed_photo(photo.pk)
    assert result["outcome"] == "failed" and result["error"].startswith("The file is not an image")
    assert no_retry_scheduled()


def test_an_unexpected_error_is_recorded_retried_and_raised_for_the_queue(make_photo, monkeypatch, caplog):
    photo = make_photo(1)

    def explode(*args, **kwargs):
        raise RuntimeError("model crashed")

    monkeypatch.setattr(tasks, "embed_photos", explode)
    with pytest.raises(RuntimeError):
        tasks.embed_photo(photo.pk)
    monkeypatch.undo()
    photo.refresh_from_db()
    assert photo.embedding_status == "failed"
    assert photo.embedding_error == "RuntimeError while embedding (the worker's log has the details)."
    assert "model crashed" in caplog.text
    assert not no_retry_scheduled()


def test_saving_a_photo_queues_its_embedding_after_commit(make_photo, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        photo = make_photo(1)
    assert len(callbacks) == 1 and not PhotoEmbedding.objects.exists()
    callbacks[0]()
    assert PhotoEmbedding.objects.get().photo == photo


def test_a_replaced_file_is_re_embedded_and_its_old_vector_never_used(make_photo, django_capture_on_commit_callbacks):
    photo = make_photo(1)
    tasks.embed_photo(photo.pk)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        photo.image = upload(make_image_bytes(2), "new.jpg")
        photo.save()
    import io

    from similarity.gallery.images import open_image

    old_picture = open_image(io.BytesIO(make_image_bytes(1)))
    assert search.search_image(old_picture).matches == []  # stale vector ignored
    callbacks[0]()  # the queued re-embedding
    photo.refresh_from_db()
    assert photo.embedding_status == "ready"
    assert PhotoEmbedding.objects.get(photo=photo).source_sha256 == photo.sha256


def test_editing_coordinates_queues_nothing(make_photo, django_capture_on_commit_callbacks):
    photo = make_photo(1)
    tasks.embed_photo(photo.pk)
    photo.refresh_from_db()
    with django_capture_on_commit_callbacks() as callbacks:
        photo.latitude = 1.0
        photo.save()
    assert callbacks == []


def test_maintenance_embeds_photos_whose_task_was_lost(make_photo):
    for seed in range(3):
        make_photo(seed)  # inside the test's transaction on_commit never runs: no task was queued
    assert tasks.maintain_index()["embedded"] == 3
    assert PhotoEmbedding.objects.count() == 3
    assert {p.embedding_status for p in ReferencePhoto.objects.all()} == {"ready"}
    assert index.read_manifest().count == 3  # first index built as well


def test_maintenance_leaves_a_small_young_delta_alone(make_photo):
    tasks.embed_photo(make_photo(1).pk)
    maintenance.rebuild_index()
    tasks.embed_photo(make_photo(2).pk)
    build_id = index.read_manifest().build_id
    assert tasks.maintain_index()["index"] == "up to date"
    assert index.read_manifest().build_id == build_id


def test_maintenance_compacts_a_large_delta(make_photo, settings):
    settings.SIMILARITY_COMPACT_DELTA_SIZE = 2
    tasks.embed_photo(make_photo(1).pk)
    maintenance.rebuild_index()
    for seed in (2, 3):
        tasks.embed_photo(make_photo(seed).pk)
    assert tasks.maintain_index() == {
        "embedded": 0,
        "index": "rebuilt",
        "reason": "2 vector(s) added and 0 removed since the build",
        "vectors": 3,
    }
    assert index.read_manifest().count == 3


def test_maintenance_compacts_an_old_delta(make_photo, settings):
    tasks.embed_photo(make_photo(1).pk)
    maintenance.rebuild_index()
    ReferencePhoto.objects.all().delete()
    settings.SIMILARITY_COMPACT_MAX_AGE_SECONDS = 0
    assert tasks.maintain_index()["reason"].startswith("0 added / 1 removed")
    assert index.read_manifest().count == 0


def test_maintenance_rebuilds_a_corrupt_index(make_photo):
    tasks.embed_photo(make_photo(1).pk)
    manifest = maintenance.rebuild_index()
    manifest.path.write_bytes(b"garbage")
    index.forget_loaded_index()
    assert tasks.maintain_index()["reason"].startswith("index unusable")
    assert index.load_index().manifest.count == 1


def test_a_changed_encoder_gets_its_own_vectors_and_then_the_index(make_photo, use_random_clip):
    photo = make_photo(1)
    embedding.embed_photos([photo], get_encoder("efficientnet_lite0"))
    maintenance.rebuild_index("efficientnet_lite0")
    assert tasks.maintain_index()["reason"].startswith("encoder changed")
    assert index.read_manifest().encoder == use_random_clip.id
    assert set(PhotoEmbedding.objects.values_list("encoder", flat=True)) == {"efficientnet_lite0", use_random_clip.id}


def test_maintenance_skips_compaction_while_a_build_runs(make_photo):
    from similarity.index import IndexBuildLock

    tasks.embed_photo(make_photo(1).pk)
    with IndexBuildLock():
        assert tasks.maintain_index()["index"] == "a build is already running"
    assert index.read_manifest() is None


def test_the_maintenance_schedule_is_installed(db):
    schedule = Schedule.objects.get(name="similarity: maintain index")
    assert schedule.func == "similarity.tasks.maintain_index" and schedule.minutes == 1 and schedule.repeats == -1
