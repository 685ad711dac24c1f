import math

import pytest
from django.core.exceptions import ValidationError

from similarity.models import EmbeddingStatus, ReferencePhoto
from tests.conftest import make_image_bytes, upload


@pytest.mark.parametrize(
    "latitude, longitude",
    [
        (math.nan, 0.0),
        (0.0, math.nan),
        (math.inf, 0.0),
        (0.0, -math.inf),
        (90.0001, 0.0),
        (-91, 0.0),
        (0.0, 180.5),
        (0.0, -181),
    ],
)
def test_full_clean_refuses_non_finite_or_out_of_range_coordinates(db, latitude, longitude):
    photo = ReferencePhoto(image=upload(make_image_bytes()), latitude=latitude, longitude=longitude)
    with pytest.raises(ValidationError):
        photo.full_clean()


def test_save_refuses_nan_even_without_form_validation(db):
    photo = ReferencePhoto(image=upload(make_image_bytes()), latitude=math.nan, longitude=0.0)
    with pytest.raises(ValidationError):
        photo.save()
    assert ReferencePhoto.objects.count() == 0


@pytest.mark.parametrize("latitude, longitude", [(90, 180), (-90, -180), (0, 0), (51.5, -0.12)])
def test_boundary_coordinates_are_accepted(db, latitude, longitude):
    photo = ReferencePhoto(image=upload(make_image_bytes()), latitude=latitude, longitude=longitude)
    photo.full_clean()
    photo.save()
    assert ReferencePhoto.objects.get().latitude == latitude


def test_saving_records_the_file_hash_and_a_generated_file_name(make_photo):
    photo = make_photo(seed=3)
    assert len(photo.sha256) == 64
    assert "seed-3" not in photo.image.name
    assert photo.image.name.startswith("reference/")
    assert photo.width == 320 and photo.height == 240


def test_a_new_photo_is_pending_until_embedded(make_photo):
    assert make_photo().embedding_status == EmbeddingStatus.PENDING


def test_full_clean_names_the_existing_photo_for_a_duplicate_file(make_photo):
    original = make_photo(seed=5)
    duplicate = ReferencePhoto(image=upload(make_image_bytes(5)), latitude=1, longitude=1)
    with pytest.raises(ValidationError, match=f"photo {original.pk}"):
        duplicate.full_clean()


def test_replacing_the_image_resets_the_embedding_state(make_photo):
    photo = make_photo(seed=1)
    ReferencePhoto.objects.filter(pk=photo.pk).update(embedding_status=EmbeddingStatus.READY)
    photo.refresh_from_db()
    old_hash = photo.sha256
    photo.image = upload(make_image_bytes(2), "other.jpg")
    photo.save()
    assert photo.sha256 != old_hash
    assert photo.embedding_status == EmbeddingStatus.PENDING


def test_editing_coordinates_keeps_the_embedding_state(make_photo):
    photo = make_photo(seed=1)
    ReferencePhoto.objects.filter(pk=photo.pk).update(embedding_status=EmbeddingStatus.READY)
    photo.refresh_from_db()
    photo.latitude = 10.0
    photo.save()
    assert photo.embedding_status == EmbeddingStatus.READY
