"""Export and restore: export_gallery writes what import_photos reads, vectors included."""

import io
import json

import numpy as np
import pytest
from django.core.management import CommandError, call_command

from similarity.models import PhotoEmbedding, ReferencePhoto
from similarity.search import maintenance

FIELDS = ("latitude", "longitude", "title", "address", "source", "license", "notes")


def snapshot():
    """Everything a restore must bring back, by file hash."""
    photos = {photo.sha256: tuple(getattr(photo, name) for name in FIELDS) for photo in ReferencePhoto.objects.all()}
    vectors = {
        (row.photo.sha256, row.encoder): bytes(row.vector) for row in PhotoEmbedding.objects.select_related("photo")
    }
    return photos, vectors


def evaluation() -> dict:
    out = io.StringIO()
    call_command("evaluate_similarity", "--leave-one-out", "--json", stdout=out)
    return json.loads(out.getvalue())


@pytest.fixture
def exported(sample_gallery, tmp_path):
    first = ReferencePhoto.objects.order_by("pk").first()
    first.notes, first.title = 'Bought in 2019; "scan 2", second line\nhere', "Dom, Berlin — 1905"
    first.save()
    maintenance.rebuild_index()
    before = snapshot(), evaluation()
    out = tmp_path / "export"
    call_command("export_gallery", str(out), "--vectors", stdout=io.StringIO())
    return out, before


def empty_the_installation(settings):
    ReferencePhoto.objects.all().delete()
    for path in settings.SIMILARITY_INDEX_DIR.glob("*"):
        path.unlink()


def test_an_export_restored_with_its_trusted_vectors_loses_nothing_and_queues_no_embedding(
    exported, settings, monkeypatch, django_capture_on_commit_callbacks
):
    out, (before_state, before_figures) = exported
    assert sorted(path.name for path in out.iterdir()) == ["manifest.csv", "photos", "vectors"]
    empty_the_installation(settings)
    queued = []
    monkeypatch.setattr("similarity.tasks.async_task", lambda func, *args, **kwargs: queued.append(func))
    with django_capture_on_commit_callbacks(execute=True):
        call_command(
            "import_photos",
            str(out),
            "--manifest",
            str(out / "manifest.csv"),
            "--trust-vectors",  # after a sample of them matched fresh embeddings
            "--no-progress",
            stdout=io.StringIO(),
        )
    assert "similarity.tasks.embed_photo" not in queued
    assert snapshot() == before_state
    assert set(ReferencePhoto.objects.values_list("embedding_status", flat=True)) == {"ready"}
    maintenance.rebuild_index()
    assert evaluation() == before_figures


def test_without_vectors_the_restored_photos_are_embedded_again_to_the_same_figures(
    exported, settings, django_capture_on_commit_callbacks
):
    import shutil

    out, (before_state, before_figures) = exported
    shutil.rmtree(out / "vectors")
    empty_the_installation(settings)
    with django_capture_on_commit_callbacks(execute=True):  # the save signal queues each embedding
        call_command(
            "import_photos", str(out), "--manifest", str(out / "manifest.csv"), "--no-progress", stdout=io.StringIO()
        )
    assert snapshot()[0] == before_state[0]
    maintenance.rebuild_index()
    # embedded again in other batches: the vectors agree to float rounding, so do the figures
    assert _close(evaluation(), before_figures)


def _close(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_close(a[key], b[key]) for key in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float):
        return a == pytest.approx(b, rel=1e-4)
    return a == b


def test_an_export_never_writes_into_a_folder_that_holds_something(sample_gallery, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    with pytest.raises(CommandError, match="exists and is not an empty folder"):
        call_command("export_gallery", str(folder))
    assert [path.name for path in folder.iterdir()] == ["keep.txt"]


def test_damaged_vectors_are_refused_in_one_line_and_nothing_is_imported(exported, settings):
    out, _ = exported
    (archive,) = (out / "vectors").glob("*.npz")
    np.savez(
        archive,
        encoder=np.array(["efficientnet_lite0"]),
        sha256=np.array(["not-a-hash"]),
        vectors=np.zeros((1, 4), dtype=np.float32),
    )
    empty_the_installation(settings)
    with pytest.raises(CommandError, match="malformed file hash"):
        call_command("import_photos", str(out), "--manifest", str(out / "manifest.csv"), "--no-progress")
    assert not ReferencePhoto.objects.exists()


def test_inactive_photos_stay_behind(sample_gallery, tmp_path):
    ReferencePhoto.objects.filter(pk=ReferencePhoto.objects.first().pk).update(is_active=False)
    call_command("export_gallery", str(tmp_path / "out"), stdout=io.StringIO())
    rows = (tmp_path / "out" / "manifest.csv").read_text(encoding="utf-8").strip().splitlines()
    assert len(rows) == 1 + 9 and len(list((tmp_path / "out" / "photos").iterdir())) == 9
