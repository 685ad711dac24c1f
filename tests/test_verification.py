"""Geometric verification: local features kept in step with the gallery, and verified matches first.

The sample gallery holds two Lund street photos of one scene (about 150
MAGSAC inliers between them) and photos of other places (chance level, at
most about 11), so verification has a real answer to find here.
"""

import io

import cv2
import numpy as np
import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.management import call_command
from PIL import Image
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from similarity import tasks, threads
from similarity.geometry import verification
from similarity.geometry.geo import haversine_m, weighted_centre
from similarity.models import PhotoFeatures, ReferencePhoto
from similarity.search import Match, features, search_similar_to_photo
from tests.conftest import SAMPLE_GALLERY, make_curator, upload

LUND_01 = SAMPLE_GALLERY / "photos" / "lund" / "01.jpg"
LUND_02 = SAMPLE_GALLERY / "photos" / "lund" / "02.jpg"
TUSCANY = SAMPLE_GALLERY / "photos" / "tuscany" / "DSCN0010.jpg"


@pytest.fixture(autouse=True)
def verification_on(settings):
    settings.SIMILARITY_VERIFY = "all"
    features.forget_cached()  # no features remembered from another test


@pytest.fixture
def curator_client(db):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=make_curator()).key}")
    return client


def photo_from(path) -> ReferencePhoto:
    """The sample gallery's photo of this file (its title names the file; Berlin and Lund both have a 01.jpg)."""
    place = "Lund" if path.parent.name == "lund" else path.parent.name.title()
    return ReferencePhoto.objects.get(title__contains=place, title__endswith=f"({path.name})")


def current_features(photo: ReferencePhoto) -> PhotoFeatures | None:
    """The photo's features record, when it belongs to the photo's present file and its file exists."""
    photo.refresh_from_db()
    record = PhotoFeatures.objects.filter(photo=photo, source_sha256=photo.sha256).first()
    if record is not None:
        assert default_storage.exists(record.file)
        assert record.count > 100 and record.size == default_storage.size(record.file)
    return record


def cropped_jpeg(path, box=(0.1, 0.1, 0.9, 0.9), quality=85) -> bytes:
    image = Image.open(path)
    width, height = image.size
    buffer = io.BytesIO()
    image.crop((box[0] * width, box[1] * height, box[2] * width, box[3] * height)).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


# --- ordering -------------------------------------------------------------------------------------


def test_a_verified_match_is_promoted_above_an_unverified_one(verified_gallery):
    other_place, same_scene = photo_from(TUSCANY), photo_from(LUND_02)
    ranked_by_vector = [Match(other_place, 0.9), Match(same_scene, 0.5)]

    verified = features.verify_matches(ranked_by_vector, features.stored_features(photo_from(LUND_01)), "all")

    assert [match.photo for match in verified] == [same_scene, other_place]
    assert verified[0].verified and verified[0].inliers >= 20
    assert not verified[1].verified and verified[1].inliers < 20
    assert [match.similarity for match in verified] == [0.5, 0.9]  # scores are reported, not rewritten


def test_unverified_matches_keep_the_order_of_the_vectors(verified_gallery):
    others = [photo_from(SAMPLE_GALLERY / "photos" / "tuscany" / name) for name in ("DSCN0010.jpg", "DSCN0025.jpg")]
    ranked_by_vector = [Match(others[1], 0.8), Match(others[0], 0.7)]

    verified = features.verify_matches(ranked_by_vector, features.stored_features(photo_from(LUND_01)), "all")

    assert [match.photo for match in verified] == [others[1], others[0]]
    assert not any(match.verified for match in verified)


def test_a_lookup_reports_verified_matches_with_inliers_and_where_they_put_the_query(client, verified_gallery):
    response = client.post(
        "/api/similar/", {"image": upload(cropped_jpeg(LUND_01)), "verify": "all"}, format="multipart"
    )

    assert response.status_code == 200, response.content
    body = response.json()
    top = body["clip_similarity"]["all_matches"][0]
    assert top["title"].startswith("Street in Lund (01") and top["verified"] is True and top["inliers"] >= 20
    assert all(isinstance(match["inliers"], int) for match in body["clip_similarity"]["all_matches"])
    coordinates = body["coordinates"]
    assert coordinates["method"] == "verified_match" and coordinates["confidence"] >= 0.9
    around_top = [
        match
        for match in body["clip_similarity"]["all_matches"]
        if match["verified"]
        and haversine_m(
            top["metadata"]["lat"], top["metadata"]["lon"], match["metadata"]["lat"], match["metadata"]["lon"]
        )
        <= 50
    ]
    centre = weighted_centre(
        [(match["metadata"]["lat"], match["metadata"]["lon"]) for match in around_top],
        [match["inliers"] for match in around_top],
    )
    assert haversine_m(coordinates["latitude"], coordinates["longitude"], *centre) < 0.5


def test_a_geometric_fit_that_fails_counts_as_unverified(client, verified_gallery, monkeypatch):
    import cv2

    def degenerate(*args, **kwargs):  # what OpenCV 5's MAGSAC raises now and then on degenerate point sets
        raise cv2.error("OpenCV(5.0.0) estimator.cpp:418: error: (-215:Assertion failed) !model.empty()")

    monkeypatch.setattr(cv2, "findFundamentalMat", degenerate)
    response = client.post(
        "/api/similar/", {"image": upload(cropped_jpeg(LUND_01)), "verify": "all"}, format="multipart"
    )

    assert response.status_code == 200
    matches = response.json()["clip_similarity"]["all_matches"]
    assert matches and all(match["verified"] is False and match["inliers"] == 0 for match in matches)


def test_verify_off_checks_nothing(client, verified_gallery):
    response = client.post(
        "/api/similar/", {"image": upload(cropped_jpeg(LUND_01)), "verify": "off"}, format="multipart"
    )

    assert response.status_code == 200
    matches = response.json()["clip_similarity"]["all_matches"]
    assert matches and all(match["verified"] is False and match["inliers"] is None for match in matches)


def test_verify_first_stops_at_the_first_verified_candidate(verified_gallery, settings):
    settings.SIMILARITY_DEFAULT_TOP_K = 9  # every other photo of the gallery
    result = search_similar_to_photo(photo_from(LUND_01), verify="first")

    assert result.matches[0].verified
    assert any(match.inliers is None for match in result.matches)  # the rest were not checked
    checked_all = search_similar_to_photo(photo_from(LUND_01), verify="all")
    assert all(match.inliers is not None for match in checked_all.matches)


def test_an_unknown_verify_mode_is_a_400(client, db):
    response = client.post(
        "/api/similar/", {"image": upload(LUND_01.read_bytes()), "verify": "maybe"}, format="multipart"
    )

    assert response.status_code == 400 and "verify" in response.json()["error"]


# --- features kept in step, through every path ------------------------------------------------


def test_a_photo_added_in_the_admin_gets_features(admin_client, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(
            "/admin/similarity/referencephoto/add/",
            {
                "image": upload(LUND_01.read_bytes()),
                "title": "Lund",
                "address": "",
                "latitude": "55.7",
                "longitude": "13.2",
                "notes": "",
                "source": "",
                "license": "",
                "is_active": "on",
                "_save": "Save",
            },
        )

    assert current_features(ReferencePhoto.objects.get()) is not None


def test_photos_bulk_uploaded_in_the_admin_get_features(admin_client, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(
            "/admin/similarity/referencephoto/bulk-upload/",
            {
                "images": [
                    upload(path.read_bytes(), path.name)
                    for path in (TUSCANY, SAMPLE_GALLERY / "photos/tuscany/DSCN0025.jpg")
                ],
            },
        )

    photos = ReferencePhoto.objects.all()
    assert len(photos) == 2 and all(current_features(photo) for photo in photos)


def test_a_photo_created_through_the_api_gets_features(curator_client, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = curator_client.post(
            "/api/photos/",
            {"image": upload(LUND_01.read_bytes()), "latitude": "55.7", "longitude": "13.2"},
            format="multipart",
        )

    assert response.status_code == 201, response.content
    assert current_features(ReferencePhoto.objects.get()) is not None


def test_replacing_a_photos_file_replaces_its_features(curator_client, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        curator_client.post(
            "/api/photos/",
            {"image": upload(LUND_01.read_bytes()), "latitude": "55.7", "longitude": "13.2"},
            format="multipart",
        )
    photo = ReferencePhoto.objects.get()
    before = current_features(photo)

    with django_capture_on_commit_callbacks(execute=True):
        response = curator_client.patch(
            f"/api/photos/{photo.pk}/", {"image": upload(LUND_02.read_bytes(), "02.jpg")}, format="multipart"
        )

    assert response.status_code == 200, response.content
    after = current_features(photo)
    assert after is not None and after.source_sha256 != before.source_sha256
    assert after.file != before.file and not default_storage.exists(before.file)
    assert PhotoFeatures.objects.count() == 1


def test_photos_imported_from_a_folder_get_features(db, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        call_command(
            "import_photos",
            str(SAMPLE_GALLERY / "photos" / "lund"),
            "--manifest",
            str(SAMPLE_GALLERY / "manifest.csv"),
            "--no-progress",
            stdout=io.StringIO(),
        )

    photos = ReferencePhoto.objects.all()
    assert len(photos) == 3 and all(current_features(photo) for photo in photos)


def test_photos_restored_with_their_vectors_get_features(
    verified_gallery, tmp_path, django_capture_on_commit_callbacks
):
    call_command("export_gallery", str(tmp_path / "export"), "--vectors", stdout=io.StringIO())
    ReferencePhoto.objects.all().delete()

    with django_capture_on_commit_callbacks(execute=True):
        call_command(
            "import_photos",
            str(tmp_path / "export"),
            "--manifest",
            str(tmp_path / "export" / "manifest.csv"),
            "--no-progress",
            stdout=io.StringIO(),
        )

    photos = ReferencePhoto.objects.all()
    assert len(photos) == len(verified_gallery) and all(current_features(photo) for photo in photos)


def test_deleting_a_photo_through_the_api_deletes_its_features(
    curator_client, verified_gallery, django_capture_on_commit_callbacks
):
    photo = photo_from(LUND_01)
    name = current_features(photo).file

    with django_capture_on_commit_callbacks(execute=True):
        assert curator_client.delete(f"/api/photos/{photo.pk}/").status_code == 204

    assert not PhotoFeatures.objects.filter(photo_id=photo.pk).exists() and not default_storage.exists(name)


def test_deleting_photos_in_the_admin_deletes_their_features(
    admin_client, verified_gallery, django_capture_on_commit_callbacks
):
    photos = [photo_from(LUND_01), photo_from(LUND_02)]
    names = [current_features(photo).file for photo in photos]

    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(
            "/admin/similarity/referencephoto/",
            {
                "action": "delete_selected",
                "_selected_action": [photo.pk for photo in photos],
                "post": "yes",
            },
        )

    assert ReferencePhoto.objects.count() == len(verified_gallery) - 2
    assert not any(default_storage.exists(name) for name in names)


def test_scheduled_maintenance_extracts_what_is_missing(verified_gallery):
    photo = photo_from(LUND_01)
    PhotoFeatures.objects.filter(photo=photo).delete()

    tasks.maintain_index()

    assert current_features(photo) is not None


def test_stats_report_the_features_and_what_they_cost(client, verified_gallery):
    body = client.get("/api/stats/").json()["verification"]

    stored = PhotoFeatures.objects.all()
    assert body["mode"] == "all" and body["top_n"] == 20 and body["min_inliers"] == 20
    assert body["photos_with_features"] == len(verified_gallery) == len(stored)
    assert body["features_bytes"] == sum(default_storage.size(record.file) for record in stored)
    assert body["mean_bytes_per_photo"] == round(body["features_bytes"] / len(stored))


def test_no_features_are_extracted_when_verification_is_off(settings, make_photo):
    settings.SIMILARITY_VERIFY = "off"
    photo = make_photo(1)

    tasks.embed_photo(photo.pk)

    assert not PhotoFeatures.objects.exists()


# --- the features format and the matcher ---------------------------------------------------------


def format_1_bytes(path) -> bytes:
    """What the first features format stored for a photo: float32 points, uint8 RootSIFT descriptors."""
    with Image.open(path) as image:
        points, descriptors, _ = verification.rootsift(image.convert("RGB"))
    buffer = io.BytesIO()
    np.savez_compressed(buffer, points=points, descriptors=np.round(descriptors * 255).astype(np.uint8))
    return buffer.getvalue()


@pytest.fixture
def lund_on_format_1(verified_gallery):
    """The gallery with Lund 02's features as the first format stored them."""
    photo = photo_from(LUND_02)
    record = PhotoFeatures.objects.get(photo=photo)
    default_storage.delete(record.file)
    name = default_storage.save(f"features/{photo.image.name}.npz", ContentFile(format_1_bytes(LUND_02)))
    PhotoFeatures.objects.filter(pk=record.pk).update(file=name, format_version=1)
    features.forget_cached()
    return photo


def test_extracted_keypoints_are_distinct_and_at_most_the_budget():
    with Image.open(LUND_01) as image:
        found = verification.extract(image.convert("RGB"))

    assert 1000 < len(found) <= verification.MAX_FEATURES
    assert len(np.unique(found.points, axis=0)) == len(found)  # no keypoint twice at one spot
    assert found.frame == (1024, 768) and found.codes.dtype == np.int8 and found.codes.shape[1] == 64


def test_features_survive_their_file_format():
    with Image.open(LUND_01) as image:
        found = verification.extract(image.convert("RGB"))

    read = verification.LocalFeatures.from_bytes(found.to_bytes())

    assert np.array_equal(read.codes, found.codes) and read.frame == found.frame
    assert np.abs(read.points - found.points).max() <= 0.5 / verification.POINT_SCALE


def test_a_photo_with_features_of_the_old_format_is_still_verified(lund_on_format_1):
    result = search_similar_to_photo(photo_from(LUND_01), verify="all")

    match = next(match for match in result.matches if match.photo == lund_on_format_1)
    assert match.verified and match.inliers >= 20


def test_maintenance_replaces_features_of_the_old_format(lund_on_format_1, django_capture_on_commit_callbacks):
    from similarity.stats import verification_stats

    old_name = PhotoFeatures.objects.get(photo=lund_on_format_1).file
    assert features.photos_needing_features().filter(pk=lund_on_format_1.pk).exists()
    assert verification_stats()["photos_with_older_format"] == 1

    with django_capture_on_commit_callbacks(execute=True):
        tasks.maintain_index()

    record = PhotoFeatures.objects.get(photo=lund_on_format_1)
    assert record.format_version == verification.FORMAT_VERSION and record.file != old_name
    assert not default_storage.exists(old_name) and default_storage.exists(record.file)
    assert not features.photos_needing_features().exists()
    assert verification_stats()["photos_with_older_format"] == 0


def test_a_pair_with_fewer_matches_than_needed_is_not_fitted(verified_gallery, monkeypatch):
    import cv2

    fitted = []
    real_fit = cv2.findFundamentalMat
    monkeypatch.setattr(cv2, "findFundamentalMat", lambda *args: fitted.append(len(args[0])) or real_fit(*args))
    matcher = verification.QueryMatcher(features.stored_features(photo_from(LUND_01)), min_matches=20)

    assert matcher.inliers(features.stored_features(photo_from(TUSCANY))) == 0
    assert fitted == []  # another place: too few mutual matches to try a geometry
    assert matcher.inliers(features.stored_features(photo_from(LUND_02))) >= 20
    assert fitted and fitted[0] >= 20


@pytest.mark.parametrize(
    ("putative", "expected"),
    [
        (20, verification.FIT_MIN_ITERATIONS),  # every match must agree: any clean sample finds them
        (35, 344),  # RANSAC's bound for 20 agreeing of 35 at 99.9 %
        (200, verification.MAGSAC_ITERATIONS),  # a low share of agreeing matches: the cap
    ],
)
def test_the_fit_draws_the_samples_it_takes_to_find_enough_inliers(putative, expected):
    assert verification.fit_iterations(putative, 20) == expected


def test_a_pair_with_barely_enough_matches_is_fitted_with_few_samples(verified_gallery, monkeypatch):
    lund_02 = features.stored_features(photo_from(LUND_02))
    matcher = verification.QueryMatcher(features.stored_features(photo_from(LUND_01)), min_matches=20)
    agreeing = matcher.correspondences(lund_02).candidate[:22]  # 22 inliers of the pair ...
    _, matched = matcher.matches(lund_02)
    disagreeing = [i for i in matched if not (lund_02.points[i] == agreeing).all(axis=1).any()][:2]  # ... 2 not
    keep = [np.flatnonzero((lund_02.points == point).all(axis=1))[0] for point in agreeing] + disagreeing
    barely = verification.LocalFeatures(lund_02.points[keep], lund_02.codes[keep], lund_02.frame)
    drawn = []
    real_fit = cv2.findFundamentalMat
    monkeypatch.setattr(cv2, "findFundamentalMat", lambda *args: drawn.append(args[-1]) or real_fit(*args))

    assert matcher.inliers(barely) >= 20  # 22 of 24 matches agree: a few samples find them
    assert matcher.inliers(lund_02) >= 20
    # 20 of 24 must agree: a clean sample is likely at once; 20 of hundreds: the cap
    assert drawn == [verification.FIT_MIN_ITERATIONS, verification.MAGSAC_ITERATIONS]


def test_explain_returns_the_inlier_pairs_of_each_verified_match(client, verified_gallery):
    response = client.post(
        "/api/similar/", {"image": upload(cropped_jpeg(LUND_01)), "verify": "all", "explain": "1"}, format="multipart"
    )

    assert response.status_code == 200, response.content
    matches = response.json()["clip_similarity"]["all_matches"]
    verified = [match for match in matches if match["verified"]]
    assert verified and all("correspondences" not in match for match in matches if not match["verified"])
    for match in verified:
        pairs = match["correspondences"]
        assert pairs["total"] == match["inliers"]
        assert 20 <= len(pairs["query"]) == len(pairs["reference"]) <= features.EXPLAIN_MAX_PAIRS
        assert all(0 <= value <= 1 for point in pairs["query"] + pairs["reference"] for value in point)


def test_explained_points_are_where_the_scene_is_in_each_photo(verified_gallery):
    # The crop starts 10 % in from the left and top of Lund 01 and keeps 80 %: a point of the crop at
    # fraction f lies at 0.1 + 0.8 f of the original.
    query = verification.extract(Image.open(io.BytesIO(cropped_jpeg(LUND_01))).convert("RGB"))
    lund = photo_from(LUND_01)
    [match] = features.verify_matches([Match(lund, 0.9)], query, "all", explain=True)

    pairs = match.explanation
    expected = 0.1 + 0.8 * np.array(pairs.query)
    assert np.median(np.abs(expected - np.array(pairs.reference))) < 0.01


def test_without_explain_no_correspondences_are_returned(client, verified_gallery):
    response = client.post(
        "/api/similar/", {"image": upload(cropped_jpeg(LUND_01)), "verify": "all"}, format="multipart"
    )

    assert not any("correspondences" in match for match in response.json()["clip_similarity"]["all_matches"])


def test_verification_threads_run_numpys_blas_on_one_thread():
    from threadpoolctl import threadpool_info

    from similarity.threads import single_threaded_numpy_blas

    single_threaded_numpy_blas()

    numpy_blas = [info for info in threadpool_info() if info["user_api"] == "blas" and "numpy" in info["filepath"]]
    assert numpy_blas and all(info["num_threads"] == 1 for info in numpy_blas)


def test_a_build_extracts_with_opencvs_own_threads_off(verified_gallery, monkeypatch):
    seen, rootsift = [], verification.rootsift

    def watched(image, helper=None):
        found = rootsift(image, helper)
        seen.append(cv2.getNumThreads())
        return found

    monkeypatch.setattr(verification, "rootsift", watched)
    monkeypatch.setattr(threads, "_opencv_single_threaded", False)  # as in a fresh process
    cv2.setNumThreads(2)
    PhotoFeatures.objects.all().delete()

    features.extract_missing()

    assert seen and set(seen) == {1}
