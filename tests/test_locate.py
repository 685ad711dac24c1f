"""/api/locate/: sources in priority order, each with a result or a reason."""

import pytest
from rest_framework.test import APIClient

from similarity.locate import Location, NoLocation
from tests.conftest import SAMPLE_GALLERY, gps_exif, make_image_bytes, upload

EXIF_SOURCE = {"path": "similarity.locate.sources.ExifGpsSource", "priority": 10}
SIMILARITY_SOURCE = {"path": "similarity.locate.sources.ReferenceSimilaritySource", "priority": 50}


class ExplodingSource:
    name = "exploding"

    def locate(self, query):
        raise RuntimeError("OCR service unreachable")


class StreetSignSource:
    """Stands in for another team's source, plugged in through settings."""

    name = "street_signs"

    def __init__(self, latitude=41.3874, longitude=2.1686):
        self.position = (latitude, longitude)

    def locate(self, query):
        if query.image.size[0] < 100:
            raise NoLocation("Image too small to read signs.")
        return Location(*self.position, confidence=0.8, radius_m=150.0, data={"text": "Carrer de Mallorca"})


def locate(data: bytes, run_all=False, **fields):
    url = "/api/locate/?all=1" if run_all else "/api/locate/"
    return APIClient().post(url, {"image": upload(data), **fields}, format="multipart")


def by_name(body):
    return {source["name"]: source for source in body["sources"]}


def test_a_photo_with_gps_exif_is_answered_by_exif_first(sample_gallery):
    body = locate(make_image_bytes(1, exif=gps_exif(35.6586, 139.7454))).json()
    assert body["final"]["source"] == "exif_gps"
    assert body["final"]["latitude"] == pytest.approx(35.6586, abs=1e-5)
    assert body["final"]["longitude"] == pytest.approx(139.7454, abs=1e-5)
    assert 0 < body["final"]["confidence"] <= 1 and body["final"]["radius_m"] > 0
    sources = by_name(body)
    assert sources["exif_gps"]["status"] == "success" and sources["exif_gps"]["priority"] == 10
    assert sources["clip_similarity"]["status"] == "skipped"


def test_a_photo_without_gps_is_answered_by_similarity(sample_gallery):
    photo = SAMPLE_GALLERY / "photos/sacre_coeur/44120379_8371960244.jpg"
    body = locate(photo.read_bytes()).json()
    assert body["final"]["source"] == "clip_similarity"
    assert body["final"]["latitude"] == pytest.approx(48.886706, abs=1e-4)
    assert body["final"]["longitude"] == pytest.approx(2.343104, abs=1e-4)
    sources = by_name(body)
    assert sources["exif_gps"]["status"] == "no_result"
    assert "no usable GPS EXIF" in sources["exif_gps"]["detail"]
    result = sources["clip_similarity"]["result"]
    assert result["cluster_size"] >= 1 and result["method"] == "similarity_weighted_cluster"
    assert result["matches"][0]["similarity"] > 0.99


def test_nothing_confident_gives_no_final_answer_and_every_reason(sample_gallery):
    body = locate(make_image_bytes(77)).json()
    assert body["final"] is None
    sources = by_name(body)
    assert sources["exif_gps"]["status"] == "no_result"
    assert sources["clip_similarity"]["status"] == "no_result"
    assert "below the threshold" in sources["clip_similarity"]["detail"]
    assert len(sources["clip_similarity"]["result"]["matches"]) == 5


def test_an_empty_gallery_is_a_reason_not_an_error(db):
    sources = by_name(locate(make_image_bytes(1)).json())
    assert sources["clip_similarity"]["status"] == "no_result"
    assert "no embedded photos" in sources["clip_similarity"]["detail"]


def test_the_threshold_can_be_overridden_per_request(sample_gallery):
    assert locate(make_image_bytes(77)).json()["final"] is None
    assert locate(make_image_bytes(77), threshold="0.0").json()["final"]["source"] == "clip_similarity"


def test_a_source_that_raises_is_an_error_and_the_others_still_run(sample_gallery, settings, caplog):
    settings.GEOLOCATOR_SOURCES = [
        {"path": "tests.test_locate.ExplodingSource", "priority": 1},
        EXIF_SOURCE,
        SIMILARITY_SOURCE,
    ]
    photo = SAMPLE_GALLERY / "photos/tuscany/DSCN0010.jpg"  # has GPS EXIF
    body = locate(photo.read_bytes()).json()
    sources = by_name(body)
    assert sources["exploding"]["status"] == "error"
    assert sources["exploding"]["detail"] == "RuntimeError (details in the server log)"
    assert "OCR service unreachable" in caplog.text  # the message may name hosts: logged, not answered
    assert body["final"]["source"] == "exif_gps"


def test_a_custom_source_plugs_in_through_settings(db, settings):
    settings.GEOLOCATOR_SOURCES = [
        SIMILARITY_SOURCE,
        {"path": "tests.test_locate.StreetSignSource", "priority": 5, "options": {"latitude": 1.5, "longitude": 2.5}},
    ]
    body = locate(make_image_bytes(3)).json()
    assert [source["name"] for source in body["sources"]] == ["street_signs", "clip_similarity"]
    assert body["final"] == {
        "source": "street_signs",
        "latitude": 1.5,
        "longitude": 2.5,
        "confidence": 0.8,
        "radius_m": 150.0,
    }
    assert body["sources"][0]["result"]["text"] == "Carrer de Mallorca"


def test_all_runs_every_source_even_after_an_answer(sample_gallery):
    body = locate(make_image_bytes(1, exif=gps_exif(1.0, 2.0)), run_all=True).json()
    assert body["final"]["source"] == "exif_gps"
    assert by_name(body)["clip_similarity"]["status"] == "no_result"


@pytest.mark.parametrize(
    "data, words", [(b"", "empty"), (b"GIF89a broken", "image"), (make_image_bytes(1)[:300], "truncated")]
)
def test_bad_files_are_a_400(db, data, words):
    response = locate(data)
    assert response.status_code == 400
    assert response.json()["success"] is False and words in response.json()["error"]
