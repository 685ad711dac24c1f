"""The review queue: looked-up photos proposed as reference photos, approved or rejected by curators."""

import io

import pytest
from PIL import Image
from rest_framework.test import APIClient

from similarity.gallery import review
from similarity.models import Candidate, PhotoEmbedding, ReferencePhoto
from tests.conftest import SAMPLE_GALLERY, gps_exif, make_curator, make_image_bytes, upload

PARIS = SAMPLE_GALLERY / "photos/sacre_coeur/10265353_3838484249.jpg"


def re_encoded(path, quality=80) -> bytes:
    """The same picture with other bytes: a new file that looks like a stored one."""
    buffer = io.BytesIO()
    Image.open(path).convert("RGB").save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def propose(data, client=None, name="paris.jpg"):
    return (client or APIClient()).post("/api/candidates/", {"image": upload(data, name)}, format="multipart")


def test_a_confidently_located_photo_is_kept_for_review_with_the_services_own_answer(sample_gallery, settings):
    response = propose(re_encoded(PARIS))
    assert response.status_code == 201, response.content
    body = response.json()["candidate"]
    candidate = Candidate.objects.get()
    assert body["id"] == candidate.pk and candidate.status == "pending" and not candidate.automatic
    assert (candidate.latitude, candidate.longitude) == pytest.approx((48.886706, 2.343104), abs=1e-4)
    assert candidate.source == "clip_similarity" and candidate.confidence > 0.5
    assert candidate.matches[0]["similarity"] == candidate.best_similarity > 0.97
    assert candidate.near_duplicate_of.title.startswith("Sacré-Cœur")  # it says it duplicates a reference
    assert candidate.image.name.startswith("candidates/") and (settings.MEDIA_ROOT / candidate.image.name).exists()
    assert candidate.proposed_from == "127.0.0.1" and candidate.title == "paris"


def test_a_photo_with_gps_exif_is_proposed_where_its_camera_put_it(db):
    response = propose(make_image_bytes(4, exif=gps_exif(41.8902, 12.4922)))
    assert response.status_code == 201
    candidate = Candidate.objects.get()
    assert candidate.source == "exif_gps" and candidate.latitude == pytest.approx(41.8902, abs=1e-4)
    assert candidate.near_duplicate_of is None


def test_a_photo_no_source_is_sure_about_is_not_kept(sample_gallery, settings):
    response = propose(make_image_bytes(42))
    assert response.status_code == 400
    assert response.json()["error"] == "No source is confident about this photo: there is nothing to propose."
    assert not Candidate.objects.exists() and not (settings.MEDIA_ROOT / "candidates").exists()


def test_a_photo_already_waiting_or_already_in_the_gallery_is_not_proposed_twice(sample_gallery):
    data = re_encoded(PARIS)
    first = propose(data).json()["candidate"]["id"]
    again = propose(data)
    assert (
        again.status_code == 400
        and again.json()["error"] == f"This photo is already waiting for review as candidate {first}."
    )
    stored = propose(PARIS.read_bytes())
    gallery_photo = ReferencePhoto.objects.get(title__contains="10265353")
    assert (
        stored.status_code == 400
        and stored.json()["error"] == f"This photo is already in the gallery as photo {gallery_photo.pk}."
    )


def test_lookups_keep_nothing_unless_asked(sample_gallery, settings):
    APIClient().post("/api/locate/", {"image": upload(re_encoded(PARIS))}, format="multipart")
    assert not Candidate.objects.exists() and not (settings.MEDIA_ROOT / "candidates").exists()


def test_confident_lookups_are_kept_automatically_once_a_confidence_is_set(sample_gallery, settings):
    settings.SIMILARITY_SUGGEST_CONFIDENCE = 0.5
    client = APIClient()
    client.post("/api/locate/", {"image": upload(re_encoded(PARIS, 70))}, format="multipart")
    client.post("/api/similar/", {"image": upload(re_encoded(PARIS, 60))}, format="multipart")
    client.post("/api/locate/", {"image": upload(make_image_bytes(42))}, format="multipart")  # not confident
    assert list(Candidate.objects.values_list("automatic", "source")) == [(True, "clip_similarity")] * 2


@pytest.fixture
def curator_client(client):
    client.force_login(make_curator(is_superuser=False))
    return client


def change_url(candidate):
    return f"/admin/similarity/candidate/{candidate.pk}/change/"


def form(candidate, **changes):
    data = {
        "title": candidate.title,
        "address": candidate.address,
        "notes": candidate.notes,
        "latitude": str(candidate.latitude),
        "longitude": str(candidate.longitude),
    }
    return {**data, **changes}


@pytest.fixture
def candidate(sample_gallery):
    propose(re_encoded(PARIS))
    return Candidate.objects.get()


def test_a_curator_corrects_the_position_and_approves_the_candidate_into_the_gallery(
    candidate, admin_client, settings, django_capture_on_commit_callbacks
):
    page = admin_client.get(change_url(candidate)).content.decode()
    assert 'class="photo-map candidate-map"' in page and "Save and approve" in page and "Near-duplicate of" in page
    with django_capture_on_commit_callbacks(execute=True):  # the save signal's embedding, as after a real commit
        response = admin_client.post(
            change_url(candidate),
            form(candidate, title="Sacré-Cœur at dusk", latitude="48.8867", longitude="2.3431", _approve="1"),
            follow=True,
        )
    assert "is now" in response.content.decode()
    candidate.refresh_from_db()
    photo = candidate.photo
    assert candidate.status == "approved" and candidate.reviewed_by.username == "admin"
    assert (photo.title, photo.latitude, photo.longitude) == ("Sacré-Cœur at dusk", 48.8867, 2.3431)
    assert PhotoEmbedding.objects.filter(photo=photo).exists()  # embedded like any other (tasks run inline in tests)
    assert not candidate.image and not list((settings.MEDIA_ROOT / "candidates").rglob("*.jpg"))
    found = APIClient().post("/api/similar/", {"image": upload(re_encoded(PARIS))}, format="multipart").json()
    assert found["clip_similarity"]["all_matches"][0]["id"] == photo.pk


def test_a_rejected_candidates_photo_is_deleted(candidate, admin_client, settings):
    admin_client.post(change_url(candidate), form(candidate, _reject="1"))
    candidate.refresh_from_db()
    assert candidate.status == "rejected" and not candidate.image
    assert not list((settings.MEDIA_ROOT / "candidates").rglob("*.jpg"))
    assert ReferencePhoto.objects.count() == 10


def test_approving_needs_the_permission_to_add_reference_photos(candidate, client, django_user_model):
    from django.contrib.auth.models import Permission

    reviewer = django_user_model.objects.create_user("reviewer", is_staff=True)
    reviewer.user_permissions.add(*Permission.objects.filter(codename__in=["view_candidate", "change_candidate"]))
    client.force_login(reviewer)
    response = client.post(change_url(candidate), form(candidate, _approve="1"), follow=True)
    assert "needs the permission to add reference photos" in response.content.decode()
    assert Candidate.objects.get().status == "pending"


def test_a_candidates_photo_is_for_staff_only(candidate, admin_client):
    url = f"/media/{candidate.image.name}"
    assert APIClient().get(url).status_code == 404
    assert admin_client.get(url).status_code == 200


def test_a_candidate_cannot_be_reviewed_twice(candidate, django_user_model):
    curator = make_curator("curator9")
    review.approve(candidate, curator)
    with pytest.raises(review.ProposalRefused, match="already approved"):
        review.reject(candidate, curator)


def test_approving_a_candidate_whose_image_entered_the_gallery_since_is_refused_by_the_intake(db, settings):
    data = make_image_bytes(4, exif=gps_exif(41.8902, 12.4922))
    assert propose(data).status_code == 201
    candidate = Candidate.objects.get()
    curator = make_curator("curator10")
    client = APIClient()
    client.force_authenticate(curator)
    added = client.post("/api/photos/", {"image": upload(data, "same.jpg")}, format="multipart")
    assert added.status_code == 201, added.content

    with pytest.raises(review.ProposalRefused, match=f"already in the gallery as photo {added.json()['id']}"):
        review.approve(candidate, curator)
    candidate.refresh_from_db()
    assert candidate.status == "pending" and (settings.MEDIA_ROOT / candidate.image.name).exists()
    assert ReferencePhoto.objects.count() == 1


def test_a_candidate_whose_file_was_damaged_is_not_approved_and_nothing_is_stored(db, settings):
    assert propose(make_image_bytes(5, exif=gps_exif(41.8902, 12.4922))).status_code == 201
    candidate = Candidate.objects.get()
    (settings.MEDIA_ROOT / candidate.image.name).write_bytes(b"\xff\xd8 no longer a photo")
    files_before = set(settings.MEDIA_ROOT.rglob("*"))

    with pytest.raises(review.ProposalRefused, match="not an image"):
        review.approve(candidate, make_curator("curator11"))
    assert not ReferencePhoto.objects.exists() and Candidate.objects.get().status == "pending"
    assert set(settings.MEDIA_ROOT.rglob("*")) == files_before  # no orphan copy
