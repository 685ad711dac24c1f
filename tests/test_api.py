import pytest
from django.contrib.auth.models import User
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from similarity.models import ReferencePhoto
from similarity.search import embedding, maintenance
from similarity.search.vectors import get_encoder
from tests.conftest import SAMPLE_GALLERY, make_curator, make_image_bytes, upload


@pytest.fixture
def client():
    return APIClient()


@pytest.fixture
def staff_client(db):
    user = make_curator()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client


def similar(client, data: bytes, name="query.jpg", **fields):
    return client.post("/api/similar/", {"image": upload(data, name), **fields}, format="multipart")


def assert_json_error(response, status: int, *words):
    assert response.status_code == status, response.content
    body = response.json()
    assert body["success"] is False
    for word in words:
        assert word in body["error"]
    return body


def test_a_sample_photo_finds_itself_first_with_its_coordinates(client, sample_gallery):
    photo_file = SAMPLE_GALLERY / "photos/sacre_coeur/10265353_3838484249.jpg"
    expected = ReferencePhoto.objects.get(title__contains="10265353")
    response = similar(client, photo_file.read_bytes())
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True
    best = body["clip_similarity"]["all_matches"][0]
    assert best["id"] == expected.pk and best["similarity"] >= 0.99
    assert body["coordinates"]["latitude"] == expected.latitude
    assert body["coordinates"]["longitude"] == expected.longitude
    assert body["coordinates"]["source"] == "clip_similarity"
    assert body["coordinates"]["matched_image"]["id"] == expected.pk
    assert 0.9 <= body["coordinates"]["confidence"] <= 1.0


def test_the_response_has_the_shape_the_pipeline_expects(client, sample_gallery):
    body = similar(client, (SAMPLE_GALLERY / "photos/lund/01.jpg").read_bytes(), top_k=3).json()
    assert set(body) == {"success", "coordinates", "reason", "prior", "clip_similarity"}
    assert body["reason"] is None and body["prior"] is None  # coordinates given, no prior asked for
    assert set(body["coordinates"]) == {
        "latitude",
        "longitude",
        "source",
        "confidence",
        "matched_image",
        "radius_m",
        "cluster_size",
        "method",
    }
    assert body["coordinates"]["method"] == "similarity_weighted_cluster"
    assert body["coordinates"]["cluster_size"] >= 1 and body["coordinates"]["radius_m"] >= 25
    section = body["clip_similarity"]
    assert set(section) == {"similarity", "threshold", "encoder", "all_matches"}
    assert section["encoder"] == "efficientnet_lite0@384" and section["threshold"] == 0.7
    assert len(section["all_matches"]) == 3
    for match in section["all_matches"]:
        assert set(match) == {
            "id",
            "title",
            "image_url",
            "thumbnail_url",
            "similarity",
            "verified",
            "inliers",
            "metadata",
        }
        assert match["verified"] is False and match["inliers"] is None  # verification is off in these tests
        assert "/media/thumbnails/small/" in match["thumbnail_url"]
        assert set(match["metadata"]) == {"lat", "lon", "address"}
        assert match["image_url"].startswith("http://testserver/media/reference/")


def test_a_lookup_reports_where_its_time_went_in_server_timing(client, sample_gallery):
    response = similar(client, (SAMPLE_GALLERY / "photos/lund/01.jpg").read_bytes())
    stages = dict(part.strip().split(";dur=") for part in response["Server-Timing"].split(","))
    assert {"decode", "preprocess", "model", "search", "app"} <= set(stages)
    assert all(float(duration) >= 0 for duration in stages.values())
    assert float(stages["app"]) >= float(stages["model"])


def test_coordinates_are_null_below_the_threshold(client, sample_gallery):
    body = similar(client, make_image_bytes(42), threshold=0.99).json()
    assert body["coordinates"] is None
    assert body["clip_similarity"]["similarity"] < 0.99
    assert body["clip_similarity"]["threshold"] == 0.99
    assert len(body["clip_similarity"]["all_matches"]) == 5


def test_an_empty_gallery_answers_with_no_matches(client, db):
    body = similar(client, make_image_bytes(1)).json()
    assert body["coordinates"] is None
    assert body["clip_similarity"]["all_matches"] == [] and body["clip_similarity"]["similarity"] is None


def test_no_image_is_a_400_naming_the_field(client, db):
    assert_json_error(client.post("/api/similar/", {}, format="multipart"), 400, "image")


@pytest.mark.parametrize(
    "data, words",
    [
        (b"", ("image", "empty")),
        (b"%PDF-1.4 definitely not a photo" * 20, ("image", "not an image")),
        (make_image_bytes(3)[:500], ("image", "truncated")),
    ],
)
def test_bad_files_are_a_400_naming_the_problem(client, db, data, words):
    assert_json_error(similar(client, data), 400, *words)


def test_an_oversized_upload_is_refused(client, db, settings):
    settings.SIMILARITY_MAX_UPLOAD_BYTES = 1000
    assert_json_error(similar(client, make_image_bytes(1)), 400, "image", "over the limit of 1000 bytes")


def test_a_png_named_jpg_is_read_as_what_it_is(client, sample_gallery):
    assert similar(client, make_image_bytes(1, fmt="PNG"), name="looks.jpg").status_code == 200


def test_too_many_pixels_are_refused(client, db, settings):
    settings.SIMILARITY_MAX_IMAGE_PIXELS = 10_000
    assert_json_error(similar(client, make_image_bytes(1)), 400, "pixels")


@pytest.mark.parametrize("top_k", ["0", "51", "-3", "many"])
def test_top_k_out_of_range_is_a_400(client, db, top_k):
    assert_json_error(similar(client, make_image_bytes(1), top_k=top_k), 400, "top_k")


@pytest.mark.parametrize("threshold", ["nan", "inf", "1.5", "x"])
def test_a_bad_threshold_is_a_400(client, db, threshold):
    assert_json_error(similar(client, make_image_bytes(1), threshold=threshold), 400, "threshold")


def test_a_query_against_another_encoders_index_is_refused_with_how_to_rebuild(client, sample_gallery, use_random_clip):
    maintenance.rebuild_index("efficientnet_lite0@384")
    body = assert_json_error(similar(client, make_image_bytes(1)), 409, "build_clip_index --encoder")
    assert "open_clip:ViT-B-32/random-init" in body["error"]


def test_the_clip_path_answers_with_random_weights(client, make_photo, use_random_clip):
    photos = [make_photo(seed) for seed in range(3)]
    embedding.embed_photos(photos, use_random_clip)
    body = similar(client, make_image_bytes(1)).json()
    assert body["clip_similarity"]["encoder"] == "open_clip:ViT-B-32/random-init"
    assert body["clip_similarity"]["threshold"] == 0.75
    assert body["clip_similarity"]["all_matches"][0]["id"] == photos[1].pk


def test_text_search_with_clip(client, make_photo, use_random_clip):
    embedding.embed_photos([make_photo(1), make_photo(2)], use_random_clip)
    response = client.get("/api/similar/text/", {"q": "a church on a hill", "top_k": 2})
    assert response.status_code == 200
    assert len(response.json()["clip_similarity"]["all_matches"]) == 2


def test_text_search_is_refused_clearly_by_an_image_only_encoder(client, db):
    assert_json_error(client.get("/api/similar/text/", {"q": "church"}), 400, "cannot embed text")


def test_similar_to_a_stored_photo_excludes_it(client, sample_gallery):
    photo = sample_gallery[0]
    response = client.get(f"/api/photos/{photo.pk}/similar/", {"top_k": 4})
    ids = [match["id"] for match in response.json()["clip_similarity"]["all_matches"]]
    assert len(ids) == 4 and photo.pk not in ids


def test_similar_to_a_missing_photo_is_a_404(client, db):
    assert client.get("/api/photos/999/similar/").status_code == 404


def test_anyone_may_list_and_read_photos(client, make_photo):
    photo = make_photo(1, title="Eiffel Tower")
    listing = client.get("/api/photos/").json()
    assert listing["count"] == 1 and listing["results"][0]["title"] == "Eiffel Tower"
    detail = client.get(f"/api/photos/{photo.pk}/").json()
    assert detail["title"] == "Eiffel Tower" and detail["image_url"].endswith(".jpg")


def test_anonymous_writes_are_refused(client, make_photo):
    photo = make_photo(1)
    assert_json_error(client.patch(f"/api/photos/{photo.pk}/", {"title": "x"}, format="multipart"), 403)
    assert_json_error(client.delete(f"/api/photos/{photo.pk}/"), 403)
    assert ReferencePhoto.objects.get().title == "Photo 1"


def test_non_staff_users_cannot_write(db, make_photo):
    user = User.objects.create_user("visitor", password="x")
    client = APIClient()
    client.force_authenticate(user)
    assert client.delete(f"/api/photos/{make_photo(1).pk}/").status_code == 403


def test_staff_create_a_photo_with_a_token(staff_client, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(
            "/api/photos/",
            {"image": upload(make_image_bytes(1)), "latitude": "40.4168", "longitude": "-3.7038", "title": "Madrid"},
            format="multipart",
        )
    assert response.status_code == 201, response.content
    photo = ReferencePhoto.objects.get()
    assert photo.title == "Madrid" and photo.is_active
    assert photo.embedding_status == "ready"  # queued on commit; tests run tasks synchronously


@pytest.mark.parametrize("latitude, longitude", [("nan", "1"), ("1", "inf"), ("91", "0"), ("0", "-180.01")])
def test_bad_coordinates_are_refused_by_the_api(staff_client, latitude, longitude):
    response = staff_client.post(
        "/api/photos/",
        {"image": upload(make_image_bytes(1)), "latitude": latitude, "longitude": longitude},
        format="multipart",
    )
    assert_json_error(response, 400)
    assert ReferencePhoto.objects.count() == 0


def test_a_duplicate_upload_is_refused_naming_the_existing_photo(staff_client, make_photo):
    existing = make_photo(1)
    response = staff_client.post(
        "/api/photos/", {"image": upload(make_image_bytes(1)), "latitude": "1", "longitude": "1"}, format="multipart"
    )
    assert_json_error(response, 400, "image", f"photo {existing.pk}")


def test_a_non_image_upload_to_the_gallery_is_refused(staff_client):
    response = staff_client.post(
        "/api/photos/", {"image": upload(b"hello", "x.jpg"), "latitude": "1", "longitude": "1"}, format="multipart"
    )
    assert_json_error(response, 400, "image")


def test_staff_edit_coordinates(staff_client, make_photo):
    photo = make_photo(1)
    response = staff_client.patch(f"/api/photos/{photo.pk}/", {"latitude": "10.5"}, format="multipart")
    assert response.status_code == 200
    photo.refresh_from_db()
    assert photo.latitude == 10.5


def test_deleting_a_photo_deletes_its_file(staff_client, make_photo, django_capture_on_commit_callbacks):
    photo = make_photo(1)
    path = photo.image.path
    with django_capture_on_commit_callbacks(execute=True):
        assert staff_client.delete(f"/api/photos/{photo.pk}/").status_code == 204
    assert not ReferencePhoto.objects.exists()
    import os

    assert not os.path.exists(path)


def test_lookups_can_require_login(client, db, settings, staff_client):
    settings.SIMILARITY_PUBLIC_LOOKUPS = False
    assert_json_error(similar(client, make_image_bytes(1)), 403)
    assert similar(staff_client, make_image_bytes(1)).status_code == 200


def test_stats_count_photos_by_state_and_describe_the_index(client, make_photo):
    photos = [make_photo(seed) for seed in range(4)]
    embedding.embed_photos(photos[:2], get_encoder())
    ReferencePhoto.objects.filter(pk=photos[2].pk).update(embedding_status="failed", embedding_error="bad file")
    body = client.get("/api/stats/").json()
    assert body["photos"] == {"total": 4, "active": 4, "embedded": 2, "pending": 1, "failed": 1}
    assert body["encoder"] == "efficientnet_lite0@384" and body["dimension"] == 1280 and body["device"] == "cpu"
    assert body["index"]["size"] == 0 and body["index"]["file"] is None
    assert body["index_stale"] is True and body["delta_size"] == 2

    ReferencePhoto.objects.filter(pk__in=[photos[2].pk, photos[3].pk]).update(is_active=False)
    manifest = maintenance.rebuild_index()
    body = client.get("/api/stats/").json()
    assert body["index"]["size"] == 2 and body["index"]["file"] == manifest.file
    assert body["index"]["age_seconds"] >= 0
    assert body["index_stale"] is False and body["delta_size"] == 0


def test_the_openapi_schema_is_served(client, db):
    response = client.get("/api/schema/")
    assert response.status_code == 200 and b"/api/similar/" in response.content


def test_session_writes_need_the_csrf_token(db, make_photo):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(make_curator("curator2"))
    photo = make_photo(1)
    response = client.patch(f"/api/photos/{photo.pk}/", {"title": "x"}, format="multipart")
    assert_json_error(response, 403, "CSRF")
    assert ReferencePhoto.objects.get().title == "Photo 1"
