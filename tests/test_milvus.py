"""The Milvus vector backend against a real Milvus standalone server (the `milvus` wheel's milvus-server, etcd
inside), started once for the session on free ports: the same answers as FAISS, changes seen at once, priors
as filters, rebuilds and drift repair. Skipped, with the reason, only where the server cannot start."""

from io import StringIO

import numpy as np
import pytest
from django.core.management import CommandError, call_command

from similarity.models import ReferencePhoto
from similarity.search import maintenance, vector_store
from similarity.search.vectors import get_encoder
from tests.conftest import SAMPLE_GALLERY, upload
from tests.servers import free_port


@pytest.fixture
def on_milvus(settings, milvus_server):
    """The Milvus backend on the session's server, with this test's encoder collection empty."""
    settings.SIMILARITY_VECTOR_BACKEND = "milvus"
    settings.SIMILARITY_MILVUS_URI = milvus_server
    vector_store.milvus().drop(get_encoder().id)
    return vector_store.milvus()


def query_bytes(name="photos/sacre_coeur/10265353_3838484249.jpg") -> bytes:
    return (SAMPLE_GALLERY / name).read_bytes()


def similar(client, data: bytes, **options) -> list[tuple[int, float]]:
    response = client.post("/api/similar/", {"image": upload(data), "top_k": 10, **options})
    assert response.status_code == 200, response.content
    return [(m["id"], m["similarity"]) for m in response.json()["clip_similarity"]["all_matches"]]


def test_answers_equal_the_faiss_backends(sample_gallery, client, settings, on_milvus):
    from similarity.search.maintenance import rebuild_index

    rebuild_index()
    on_faiss = None
    settings.SIMILARITY_VECTOR_BACKEND = "faiss"
    on_faiss = similar(client, query_bytes())
    settings.SIMILARITY_VECTOR_BACKEND = "milvus"
    assert vector_store.rebuild(get_encoder().id) == len(sample_gallery)
    on_milvus_answers = similar(client, query_bytes())
    assert [photo_id for photo_id, _ in on_milvus_answers] == [photo_id for photo_id, _ in on_faiss]
    assert np.allclose([s for _, s in on_milvus_answers], [s for _, s in on_faiss], atol=1e-4)


def test_a_photo_is_found_once_its_embedding_task_ends(db, client, on_milvus, django_capture_on_commit_callbacks):
    data = query_bytes()
    with django_capture_on_commit_callbacks(execute=True):  # the save queues the task; the task writes Milvus
        photo = ReferencePhoto.objects.create(latitude=48.8867, longitude=2.3431, image=upload(data, "sc.jpg"))
    assert on_milvus.count(get_encoder().id) == 1
    assert similar(client, data)[0][0] == photo.pk


def test_a_deleted_or_deactivated_photo_is_never_answered(
    sample_gallery, client, on_milvus, django_capture_on_commit_callbacks
):
    vector_store.rebuild(get_encoder().id)
    first, second = (photo_id for photo_id, _ in similar(client, query_bytes())[:2])
    ReferencePhoto.objects.filter(pk=first).update(is_active=False)  # no signal, no task: the check alone
    assert first not in [photo_id for photo_id, _ in similar(client, query_bytes())]
    with django_capture_on_commit_callbacks(execute=True):
        ReferencePhoto.objects.get(pk=second).delete()
    assert second not in [photo_id for photo_id, _ in similar(client, query_bytes())]
    assert second not in set(on_milvus.ids(get_encoder().id))  # the queued sync removed it from Milvus


def test_a_location_prior_is_a_milvus_filter(sample_gallery, client, on_milvus):
    vector_store.rebuild(get_encoder().id)
    inside_tuscany = similar(client, query_bytes(), bbox="43.40,11.80,43.55,11.95")
    photos = ReferencePhoto.objects.in_bulk([photo_id for photo_id, _ in inside_tuscany])
    assert inside_tuscany and all(
        43.40 <= p.latitude <= 43.55 and 11.80 <= p.longitude <= 11.95 for p in photos.values()
    )


def test_build_clip_index_writes_the_collection_afresh(sample_gallery, on_milvus):
    encoder_id = get_encoder().id
    on_milvus.upsert(encoder_id, [999999], np.ones((1, get_encoder().dim), np.float32), [0.0], [0.0])  # a stray
    out = StringIO()
    call_command("build_clip_index", "--no-progress", stdout=out)
    assert f"Milvus collection:     {len(sample_gallery)} vectors" in out.getvalue()
    assert sorted(on_milvus.ids(encoder_id)) == sorted(photo.pk for photo in sample_gallery)


def test_maintenance_repairs_drift_and_stats_report_it(sample_gallery, client, on_milvus):
    encoder_id = get_encoder().id
    vector_store.rebuild(encoder_id)
    lost = sample_gallery[0].pk
    on_milvus.delete(encoder_id, [lost])
    on_milvus.upsert(encoder_id, [888888], np.ones((1, get_encoder().dim), np.float32), [1.0], [1.0])
    on_milvus.delete(encoder_id, [sample_gallery[1].pk])
    stats = client.get("/api/stats/").json()["vector_backend"]
    assert (stats["vectors"], stats["vectors_in_database"], stats["counts_match"]) == (
        len(sample_gallery) - 1,
        len(sample_gallery),
        False,
    )
    assert vector_store.drift(encoder_id) == (sorted([lost, sample_gallery[1].pk]), [888888])
    report = maintenance.maintain()
    assert report.index == "milvus" and "2 missing, 1 extra" in report.reason
    assert vector_store.drift(encoder_id) == ([], [])
    assert client.get("/api/stats/").json()["vector_backend"]["counts_match"] is True


def test_an_unreachable_server_stops_build_clip_index_with_one_line(sample_gallery, settings):
    settings.SIMILARITY_VECTOR_BACKEND = "milvus"
    settings.SIMILARITY_MILVUS_URI = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(CommandError, match="Cannot reach Milvus at http://127.0.0.1:") as error:
        call_command("build_clip_index", "--no-progress", stdout=StringIO())
    assert "\n" not in str(error.value)


def test_an_unreachable_server_makes_lookups_503_with_a_reason(sample_gallery, client, settings):
    settings.SIMILARITY_VECTOR_BACKEND = "milvus"
    settings.SIMILARITY_MILVUS_URI = f"http://127.0.0.1:{free_port()}"
    response = client.post("/api/similar/", {"image": upload(query_bytes())})
    assert response.status_code == 503 and "vector store" in response.json()["error"]
    assert "127.0.0.1" not in response.json()["error"]  # where it runs stays in the log


def test_copy_to_shared_writes_every_stored_vector_to_milvus_and_checks_the_count(sample_gallery, on_milvus):
    out = StringIO()
    call_command("copy_to_shared", "--vectors", stdout=out)
    encoder_id = get_encoder().id
    assert f"Vectors: {len(sample_gallery)} of {encoder_id} written to Milvus; its count matches" in out.getvalue()
    assert sorted(on_milvus.ids(encoder_id)) == sorted(photo.pk for photo in sample_gallery)


def test_copy_to_shared_refuses_vectors_on_the_faiss_backend(db):
    with pytest.raises(CommandError, match="SIMILARITY_VECTOR_BACKEND is faiss: set it to milvus"):
        call_command("copy_to_shared", "--vectors", stdout=StringIO())
