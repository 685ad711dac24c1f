"""The second audit's findings (issue 26, items 5-8), each reproduced through the interface the audit used.

Items 1-4 have their own files: tests/test_database_waits.py (a silent database) and tests/test_budgets.py
(cost-priced budgets, proposals, networks). Each test failed on the code the audit examined (9093a7d).
"""

import csv
import io
import os

import numpy as np
import pytest
from django.core.management import CommandError, call_command
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from similarity import tasks
from similarity.gallery.exchange import VECTORS_FOLDER
from similarity.models import PhotoEmbedding, ReferencePhoto
from tests.conftest import make_image_bytes, upload
from tests.test_exchange import empty_the_installation

# --- 5. vectors that come with an export ---------------------------------------------------------------------


@pytest.fixture
def export(sample_gallery, tmp_path):
    """The sample gallery exported with its vectors, then an empty installation to restore it on."""
    out = tmp_path / "export"
    call_command("export_gallery", str(out), "--vectors", stdout=io.StringIO())
    return out


def plant(export, scale: float) -> str:
    """Replace one photo's vector in the export by ``scale`` times the gallery's mean direction (the audit's
    attack: that photo then answers every lookup); returns the photo's file hash."""
    (archive,) = (export / VECTORS_FOLDER).glob("*.npz")
    with np.load(archive) as data:
        encoder, digests, vectors = data["encoder"], data["sha256"], data["vectors"].copy()
    mean = vectors.mean(axis=0)
    vectors[3] = scale * mean / np.linalg.norm(mean)
    np.savez(archive, encoder=encoder, sha256=digests, vectors=vectors)
    return str(digests[3])


def restore(export, *options) -> str:
    out = io.StringIO()
    call_command(
        "import_photos", str(export), "--manifest", str(export / "manifest.csv"), "--no-progress", *options, stdout=out
    )
    return out.getvalue()


def stored_vector(digest: str) -> np.ndarray:
    return PhotoEmbedding.objects.get(photo__sha256=digest).as_array()


def test_an_exported_vector_that_is_not_a_unit_vector_is_refused_in_one_line(export, settings):
    plant(export, scale=20.0)
    empty_the_installation(settings)
    with pytest.raises(CommandError, match=r"has length 20, not 1; stored vectors are unit vectors") as raised:
        restore(export)
    assert "\n" not in str(raised.value) and not ReferencePhoto.objects.exists()


def test_restored_photos_are_embedded_afresh_unless_their_vectors_are_trusted(
    export, settings, django_capture_on_commit_callbacks
):
    planted = plant(export, scale=1.0)  # a unit vector: it passes every check of its form
    empty_the_installation(settings)
    with django_capture_on_commit_callbacks(execute=True):
        output = restore(export)
    assert "not used, the photos are embedded afresh" in output
    fresh = stored_vector(planted)
    assert np.linalg.norm(fresh) == pytest.approx(1.0, abs=1e-4)
    (archive,) = (export / VECTORS_FOLDER).glob("*.npz")
    with np.load(archive) as data:
        planted_vector = data["vectors"][list(data["sha256"]).index(planted)]
    assert float(fresh @ planted_vector) < 0.99  # the image's own vector, not the planted one


def test_trusted_vectors_that_do_not_match_their_images_are_refused(export, settings):
    plant(export, scale=1.0)
    empty_the_installation(settings)
    with pytest.raises(CommandError, match=r"does not match its image \(cosine 0\.\d+"):
        restore(export, "--trust-vectors")  # the sample covers all ten photos of the sample gallery
    assert not ReferencePhoto.objects.exists()


def test_trusted_vectors_that_match_their_images_are_stored_as_exported(export, settings):
    (archive,) = (export / VECTORS_FOLDER).glob("*.npz")
    with np.load(archive) as data:
        exported = dict(zip((str(d) for d in data["sha256"]), data["vectors"]))
    empty_the_installation(settings)
    output = restore(export, "--trust-vectors")
    assert "a sample of 10 matched fresh embeddings" in output
    assert set(ReferencePhoto.objects.values_list("embedding_status", flat=True)) == {"ready"}
    for digest, vector in exported.items():
        assert np.array_equal(stored_vector(digest), vector)


# --- 6. the public statistics --------------------------------------------------------------------------------


def test_the_statistics_count_the_gallery_at_most_once_per_cache_period(make_photo, settings):
    from django.db import connection

    from similarity.stats import forget_cached_stats

    settings.SIMILARITY_STATS_CACHE_SECONDS = 60
    forget_cached_stats()
    tasks.embed_photo(make_photo(1).pk)
    client = APIClient()
    try:
        first = client.get("/api/stats/").json()
        make_photo(2)
        with CaptureQueriesContext(connection) as queries:
            second = client.get("/api/stats/").json()
    finally:
        forget_cached_stats()
    assert first["photos"]["total"] == second["photos"]["total"] == 1  # counted once, shared
    assert not [query for query in queries.captured_queries if "similarity_referencephoto" in query["sql"]]


# --- 7. request bodies are bounded before anything reads them ------------------------------------------------


def declared_body(size: int) -> tuple[bytes, dict]:
    """A real multipart body of ``size`` bytes with a file part, as a client streams it."""
    prefix = b'--x\r\nContent-Disposition: form-data; name="file"; filename="a.bin"\r\n\r\n'
    suffix = b"\r\n--x--\r\n"
    body = prefix + b"0" * (size - len(prefix) - len(suffix)) + suffix
    return body, {"content_type": "multipart/form-data; boundary=x"}


@pytest.mark.parametrize("path", ["/admin/login/", "/"])
def test_an_anonymous_body_over_the_form_limit_is_refused_before_csrf_reads_it_and_a_curators_is_not(
    db, path, stored_chunks, settings, tmp_path
):
    from django.contrib.auth.models import User
    from django.test import Client
    from rest_framework.authtoken.models import Token

    settings.FILE_UPLOAD_TEMP_DIR = str(tmp_path)
    client = Client(enforce_csrf_checks=True)
    client.cookies["csrftoken"] = "a" * 32  # a token of the client's own choosing
    body, kind = declared_body(3 * 2**20)
    response = client.generic("POST", path, body, **kind)
    assert response.status_code == 400
    assert response.content.decode() == "The request is 3 MiB; at most 1 MiB is accepted."
    assert stored_chunks == [] and list(tmp_path.iterdir()) == []

    curator = APIClient()  # a staff account's bulk upload keeps its larger limit
    user = User.objects.create_user("bulk", is_staff=True, is_superuser=True)
    curator.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    photo = make_image_bytes(1, size=(1600, 1200))
    photo += b"\0" * (3 * 2**20 - len(photo))  # 3 MiB: over the anonymous limit, a JPEG all the same
    created = curator.post(
        "/api/photos/", {"image": upload(photo), "latitude": "1", "longitude": "2"}, format="multipart"
    )
    assert created.status_code == 201, created.content


# --- 8. the lows ---------------------------------------------------------------------------------------------


def test_a_damaged_model_copy_is_detected_answered_503_and_rebuilt(tmp_path, settings, db):
    from similarity.runtime import registry
    from similarity.runtime.encoders import Encoder
    from tests.test_runtimes import tiny_tower, tiny_transform

    weights = tmp_path / "tiny.pt"
    import torch

    torch.save(tiny_tower().state_dict(), weights)

    class TinyEncoder(Encoder):
        id, family, dim, input_side = "tiny-onnx-test", "efficientnet_lite0", 64, 32

        def _weights_file(self):
            return str(weights)

        def _load(self):
            self._tower = tiny_tower()

        def _transform(self, image):
            return tiny_transform(image)

    settings.SIMILARITY_MODEL_CACHE_DIR = tmp_path / "models"
    settings.SIMILARITY_ENCODER = TinyEncoder.id

    def serve_with_a_fresh_process_encoder():
        registry.unregister(TinyEncoder.id)
        registry.register(TinyEncoder(runtime="onnx"))
        return APIClient().post("/api/similar/", {"image": upload(make_image_bytes(1))}, format="multipart")

    try:
        assert serve_with_a_fresh_process_encoder().status_code == 200  # measures and keeps the ONNX copy
        (copy,) = (tmp_path / "models").glob("*.onnx")
        copy.write_bytes(copy.read_bytes()[: copy.stat().st_size // 2])  # truncated
        damaged = serve_with_a_fresh_process_encoder()
        assert damaged.status_code == 503 and damaged.json()["success"] is False
        assert not copy.exists()  # removed with its record
        assert serve_with_a_fresh_process_encoder().status_code == 200  # built again
        assert copy.exists()
    finally:
        registry.unregister(TinyEncoder.id)


def test_manifest_cells_a_spreadsheet_would_run_are_neutralised_and_restored(sample_gallery, tmp_path, settings):
    photo = ReferencePhoto.objects.order_by("pk").first()
    photo.title, photo.notes = '=HYPERLINK("http://evil.example","x")', "@SUM(1)\n+1"
    photo.address, photo.source = "'s-Hertogenbosch", "-2 stars"
    photo.save()
    out = tmp_path / "export"
    call_command("export_gallery", str(out), stdout=io.StringIO())
    with open(out / "manifest.csv", newline="", encoding="utf-8") as handle:
        row = next(csv.DictReader(handle))
    assert (row["title"], row["notes"], row["source"]) == (
        "'" + photo.title,
        "'" + photo.notes,
        "'-2 stars",
    )
    assert row["address"] == "''s-Hertogenbosch"
    empty_the_installation(settings)
    restore(out)
    restored = ReferencePhoto.objects.get(sha256=photo.sha256)
    assert (restored.title, restored.notes, restored.address, restored.source) == (
        photo.title,
        photo.notes.strip(),
        "'s-Hertogenbosch",
        "-2 stars",
    )


def test_a_link_out_of_the_import_folder_is_refused_without_naming_its_target(db, tmp_path):
    folder, elsewhere = tmp_path / "import", tmp_path / "secret-place"
    folder.mkdir()
    elsewhere.mkdir()
    (elsewhere / "private.jpg").write_bytes(make_image_bytes(1))
    (folder / "mine.jpg").write_bytes(make_image_bytes(2))
    os.symlink(elsewhere / "private.jpg", folder / "link.jpg")
    os.symlink(folder / "mine.jpg", folder / "alias.jpg")  # inside the folder: the same photo as mine.jpg
    (folder / "manifest.csv").write_text("file,latitude,longitude\nmine.jpg,1,2\nlink.jpg,1,2\n", encoding="utf-8")
    output = restore_folder(folder)
    assert ReferencePhoto.objects.count() == 1
    assert f"skipped: {folder / 'link.jpg'}: a link to a file outside" in output
    assert "secret-place" not in output


def restore_folder(folder) -> str:
    out = io.StringIO()
    call_command("import_photos", str(folder), "--manifest", str(folder / "manifest.csv"), "--no-progress", stdout=out)
    return out.getvalue()


FEATURE_LAYOUTS = {  # the members of each features format: name, dtype, columns, bytes per item
    1: (("points", "<f4", 2, 4), ("descriptors", "|u1", 128, 1)),
    2: (("points", "<u2", 2, 2), ("codes", "|i1", 64, 1), ("frame", "<u2", 1, 2)),
}


def deflate_bomb(keypoints: int, layout: int = 1) -> bytes:
    """A features archive (np.savez_compressed's layout) whose arrays decompress to ``keypoints`` keypoints of
    zeros, written a block at a time so that the test itself never holds them."""
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, dtype, width, item in FEATURE_LAYOUTS[layout]:
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array_header_1_0(
                    member, {"descr": dtype, "fortran_order": False, "shape": (keypoints, width)}
                )
                block = bytes(16 * 2**20)
                left = keypoints * width * item
                while left > 0:
                    member.write(block[: min(left, len(block))])
                    left -= len(block)
    return buffer.getvalue()


@pytest.mark.parametrize("layout", sorted(FEATURE_LAYOUTS))
def test_a_features_file_claiming_millions_of_keypoints_is_refused_before_it_is_decompressed(
    make_photo, settings, layout
):
    import tracemalloc

    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage

    from similarity.models import PhotoFeatures
    from similarity.search import features

    bomb = deflate_bomb(2_000_000, layout)
    assert len(bomb) < 1_000_000  # 140-272 MB of keypoints in under 1 MB
    photo = make_photo(1)
    name = default_storage.save("features/bomb.npz", ContentFile(bomb))
    PhotoFeatures.objects.create(photo=photo, source_sha256=photo.sha256, file=name, count=5, size=len(bomb))
    features.forget_cached()
    tracemalloc.start()
    try:
        assert features.loader([photo.pk])(photo.pk) is None  # unreadable: the photo is not verified
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2**20


def test_an_anonymous_proposal_of_a_deactivated_photo_is_answered_as_for_an_unknown_one(sample_gallery):
    from tests.test_review import PARIS

    photo = ReferencePhoto.objects.get(sha256=__import__("hashlib").sha256(PARIS.read_bytes()).hexdigest())
    photo.is_active = False
    photo.save()
    response = APIClient().post("/api/candidates/", {"image": upload(PARIS.read_bytes())}, format="multipart")
    assert "already in the gallery" not in response.content.decode()
    assert response.status_code in (201, 400)


@pytest.fixture
def photos_and_staff(make_photo, django_user_model):
    """An active photo with notes, a deactivated one, and staff accounts with and without the view permission."""
    from django.contrib.auth.models import Permission

    shown = make_photo(1, notes="bought from a private archive")
    hidden = make_photo(2)
    hidden.is_active = False
    hidden.save()
    for photo in (shown, hidden):
        tasks.embed_photo(photo.pk)
    bare = django_user_model.objects.create_user("intern", password="x", is_staff=True)
    viewer = django_user_model.objects.create_user("viewer", password="x", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_referencephoto"))
    return shown, hidden, bare, viewer


def signed_in(user) -> APIClient:
    client = APIClient()
    client.force_login(user)
    return client


def test_only_staff_with_the_view_permission_see_inactive_photos_and_private_fields(photos_and_staff):
    from tests.test_hardening import PUBLIC_FIELDS

    shown, hidden, bare, viewer = photos_and_staff
    listing = signed_in(bare).get("/api/photos/").json()["results"]
    assert [photo["id"] for photo in listing] == [shown.pk] and set(listing[0]) == PUBLIC_FIELDS
    assert signed_in(bare).get(f"/api/photos/{hidden.pk}/").status_code == 404
    assert signed_in(bare).get(f"/media/{hidden.image.name}").status_code == 404
    listing = {photo["id"]: photo for photo in signed_in(viewer).get("/api/photos/").json()["results"]}
    assert set(listing) == {shown.pk, hidden.pk} and listing[shown.pk]["notes"] == "bought from a private archive"
    assert signed_in(viewer).get(f"/media/{hidden.image.name}").status_code == 200
