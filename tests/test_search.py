import io

import pytest

from similarity import index, search
from similarity.gallery.images import open_image
from similarity.models import PhotoEmbedding, ReferencePhoto
from similarity.search import embedding, maintenance
from similarity.search.vectors import get_encoder
from tests.conftest import make_image_bytes


@pytest.fixture
def embedded(make_photo):
    """Create photos from seeds and store their vectors."""

    def create(*seeds, **fields):
        photos = [make_photo(seed, **fields) for seed in seeds]
        embedding.embed_photos(photos, get_encoder())
        return photos

    return create


def query(seed):
    return open_image(io.BytesIO(make_image_bytes(seed)))


def test_a_photo_is_its_own_best_match(embedded):
    photos = embedded(1, 2, 3)
    result = search.search_image(query(2), top_k=3)
    assert result.best.photo == photos[1]
    assert result.best.similarity > 0.99
    assert [m.similarity for m in result.matches] == sorted((m.similarity for m in result.matches), reverse=True)


def test_results_are_the_same_from_the_snapshot_and_from_the_delta(embedded):
    embedded(1, 2, 3, 4)
    from_delta = search.search_image(query(3), top_k=4)
    maintenance.rebuild_index()
    from_snapshot = search.search_image(query(3), top_k=4)
    assert [(m.photo.pk, round(m.similarity, 5)) for m in from_delta.matches] == [
        (m.photo.pk, round(m.similarity, 5)) for m in from_snapshot.matches
    ]


def test_a_photo_embedded_after_the_build_is_found_without_a_rebuild(embedded):
    embedded(1, 2)
    maintenance.rebuild_index()
    (late,) = embedded(7)
    assert search.search_image(query(7), top_k=1).best.photo == late


def test_a_deleted_photo_disappears_at_once(embedded):
    photos = embedded(1, 2)
    maintenance.rebuild_index()
    photos[1].delete()
    assert photos[1].pk not in [m.photo.pk for m in search.search_image(query(2), top_k=5).matches]


def test_a_deactivated_photo_disappears_at_once(embedded):
    photos = embedded(1, 2)
    maintenance.rebuild_index()
    ReferencePhoto.objects.filter(pk=photos[1].pk).update(is_active=False)
    assert [m.photo.pk for m in search.search_image(query(2), top_k=5).matches] == [photos[0].pk]


def test_edited_coordinates_show_at_once(embedded):
    (photo,) = embedded(1)
    maintenance.rebuild_index()
    photo.latitude = -12.5
    photo.save()
    assert search.search_image(query(1), top_k=1).best.photo.latitude == -12.5


def test_a_re_embedded_photo_is_scored_with_its_new_vector(embedded):
    photos = embedded(1, 2)
    maintenance.rebuild_index()
    # the second photo gets the first one's picture: its stored vector changes after the build
    vector = PhotoEmbedding.objects.get(photo=photos[0]).vector
    PhotoEmbedding.objects.filter(photo=photos[1]).update(vector=vector)
    PhotoEmbedding.objects.get(photo=photos[1]).save()  # bumps `updated`
    matches = search.search_image(query(1), top_k=2).matches
    assert {m.photo.pk for m in matches} == {photos[0].pk, photos[1].pk}
    assert all(m.similarity > 0.99 for m in matches)


def test_similar_to_a_stored_photo_excludes_itself(embedded):
    photos = embedded(1, 2, 3)
    result = search.search_similar_to_photo(photos[0], top_k=5)
    assert photos[0].pk not in [m.photo.pk for m in result.matches]
    assert len(result.matches) == 2


def test_an_index_built_by_another_encoder_is_refused_with_how_to_rebuild(embedded, unit_vectors):
    from datetime import datetime, timezone

    import numpy as np

    embedded(1)
    index.save_index(
        np.arange(2), unit_vectors(2, dim=512), encoder="open_clip:ViT-B-32/openai", built_at=datetime.now(timezone.utc)
    )
    with pytest.raises(search.IndexEncoderMismatch, match="build_clip_index --encoder efficientnet_lite0"):
        search.search_image(query(1))


def test_a_corrupt_index_still_answers_exactly_from_stored_vectors(embedded):
    photos = embedded(1, 2, 3)
    manifest = maintenance.rebuild_index()
    manifest.path.write_bytes(manifest.path.read_bytes()[:100])
    index.forget_loaded_index()
    assert search.search_image(query(3), top_k=1).best.photo == photos[2]


def test_confidence_follows_the_encoder_threshold(embedded, settings):
    embedded(1)
    assert search.search_image(query(1)).confident
    settings.SIMILARITY_THRESHOLDS = {**settings.SIMILARITY_THRESHOLDS, "efficientnet_lite0": 1.01}
    assert not search.search_image(query(1)).confident
    assert search.search_image(query(1), threshold=0.5).confident


def test_an_empty_gallery_gives_no_matches(db):
    result = search.search_image(query(1))
    assert result.matches == [] and result.best is None and not result.confident
