"""A real django-q2 worker (``manage.py qcluster``) in its own process, on the test database."""

import os
import signal
import subprocess
import sys
import time

import pytest
from django.conf import settings
from django.db import transaction
from django_q.conf import Conf
from django_q.models import Schedule, Task
from rest_framework.test import APIClient

from similarity.models import PhotoEmbedding, ReferencePhoto
from similarity.search.vectors import get_encoder
from tests.conftest import ROOT, make_curator, make_image_bytes, upload
from tests.servers import database_url, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def worker(data_dir, monkeypatch):
    """Start (and finally kill) real qcluster processes sharing this test's database and data dir."""
    monkeypatch.setattr(Conf, "SYNC", False)  # enqueue for the worker instead of running inline
    get_encoder().load()  # measures the runtime choice the workers then reuse, so no task waits for it
    processes = []

    def start(**overrides: str) -> subprocess.Popen:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "geolocator.settings",
            "DJANGO_SECRET_KEY": settings.SECRET_KEY,  # django-q2 signs tasks with it: web and worker share it
            "DATABASE_URL": database_url(),
            "GEOLOCATOR_DATA_DIR": str(data_dir),
            "SIMILARITY_ENCODER": settings.SIMILARITY_ENCODER,
            # the tests' runtime, and the choice this test process measured for it (tests/settings.py)
            "SIMILARITY_RUNTIME": settings.SIMILARITY_RUNTIME,
            "SIMILARITY_MODEL_CACHE_DIR": str(settings.SIMILARITY_MODEL_CACHE_DIR),
            "SIMILARITY_BATCH_SIZE": "2",
            "HF_HUB_OFFLINE": "1",
            "Q_WORKERS": "1",
            "Q_TIMEOUT": "10",
            "Q_RETRY": "12",  # a task of a killed worker comes back after 12 s
            **overrides,
        }
        log = open(data_dir / f"qcluster-{len(processes)}.log", "wb")
        process = subprocess.Popen(
            [sys.executable, "manage.py", "qcluster"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        processes.append(process)
        return process

    yield start
    for process in processes:
        kill(process)


def kill(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def found(client, data: bytes, photo_id: int) -> bool:
    response = client.post("/api/similar/", {"image": upload(data)}, format="multipart")
    assert response.status_code == 200, response.content
    return any(
        match["id"] == photo_id and match["similarity"] > 0.99
        for match in response.json()["clip_similarity"]["all_matches"]
    )


def test_a_photo_created_through_the_api_becomes_findable_and_disappears_when_deleted(worker, django_user_model):
    worker()
    staff = make_curator()
    client = APIClient()
    client.force_authenticate(staff)
    picture = make_image_bytes(11)
    created = client.post(
        "/api/photos/", {"image": upload(picture), "latitude": "59.3293", "longitude": "18.0686"}, format="multipart"
    )
    assert created.status_code == 201, created.content
    photo_id = created.json()["id"]

    wait_for(lambda: PhotoEmbedding.objects.filter(photo_id=photo_id).exists(), "the worker to embed the photo")
    # embedded by the task the save queued (not by the once-a-minute maintenance)
    wait_for(lambda: Task.objects.filter(name=f"embed photo {photo_id}", success=True).exists(), "the task result")
    # Once the vector is stored this (already running) web process finds it: no rebuild, no restart.
    assert found(client, picture, photo_id)
    assert ReferencePhoto.objects.get(pk=photo_id).embedding_status == "ready"

    assert client.delete(f"/api/photos/{photo_id}/").status_code == 204
    assert not found(client, picture, photo_id)


def test_a_worker_killed_mid_batch_loses_nothing_and_embeds_each_photo_once(worker):
    total = 40
    with transaction.atomic():  # each save queues an embedding when this commits
        for seed in range(total):
            ReferencePhoto.objects.create(
                image=upload(make_image_bytes(seed, size=(1600, 1200))), latitude=10, longitude=20
            )
    first = worker()
    wait_for(lambda: PhotoEmbedding.objects.count() >= 2, "the first embeddings")
    kill(first)
    done_before_kill = dict(PhotoEmbedding.objects.values_list("photo_id", "updated"))
    assert 0 < len(done_before_kill) < total, "the worker should have been killed mid-way"

    worker()
    wait_for(
        lambda: ReferencePhoto.objects.filter(embedding_status="ready").count() == total,
        "every photo to be embedded after the restart",
    )
    vectors = PhotoEmbedding.objects.filter(encoder=settings.SIMILARITY_ENCODER)
    assert vectors.count() == total
    assert sorted(vectors.values_list("photo_id", flat=True)) == sorted(
        ReferencePhoto.objects.values_list("pk", flat=True)
    )
    # the photos embedded before the kill were not embedded again
    assert {
        pid: updated for pid, updated in vectors.values_list("photo_id", "updated") if pid in done_before_kill
    } == done_before_kill


def test_an_embedding_that_always_fails_runs_exactly_max_attempts_times(worker, data_dir):
    worker(
        SIMILARITY_ENCODER="open_clip:ViT-B-32//nonexistent/weights.bin",  # every run fails to load the model
        SIMILARITY_EMBED_MAX_ATTEMPTS="3",
        SIMILARITY_EMBED_RETRY_SECONDS="1",
        Q_RETRY="5",  # an unacknowledged failure would come back within seconds
    )
    photo = ReferencePhoto.objects.create(image=upload(make_image_bytes(1)), latitude=10, longitude=20)
    log = data_dir / "qcluster-0.log"

    wait_for(lambda: "giving up" in log.read_text(), "the last attempt")
    time.sleep(40)  # long enough for a redelivery (5 s) or a stray scheduled retry (the scheduler runs every 30 s)

    text = log.read_text()
    assert text.count(f"Embedding photo {photo.pk} failed (attempt") == 3
    assert text.count(f"Photo {photo.pk} failed 3 times, giving up") == 1
    assert not Schedule.objects.filter(func="similarity.tasks.embed_photo").exists()
    photo.refresh_from_db()
    assert photo.embedding_status == "failed" and "while embedding" in photo.embedding_error
