"""Location priors: searches only among reference photos inside what the caller already knows."""

import numpy as np
import pytest
from rest_framework.test import APIClient

from similarity.geometry import priors
from similarity.geometry.priors import Box, Circle, PriorError
from similarity.models import ReferencePhoto
from similarity.search import maintenance
from tests.conftest import SAMPLE_GALLERY, make_image_bytes, upload

PARIS = SAMPLE_GALLERY / "photos/sacre_coeur/10265353_3838484249.jpg"
TUSCANY_BOX = "43.40,11.80,43.55,11.95"  # south,west,north,east around the Tuscany photos
LUND = (55.6982, 13.1952)


def post(endpoint, data, **fields):
    return APIClient().post(endpoint, {"image": upload(data), **fields}, format="multipart")


# --- geometry ---------------------------------------------------------------------------------------------


def test_a_circle_holds_what_lies_within_its_radius():
    paris = Circle(48.8567, 2.3508, radius_km=10)
    assert list(paris.mask([48.886706, 48.8567, 51.5074], [2.343104, 2.45, -0.1278])) == [True, True, False]
    assert not priors.contains([paris], 48.8567, 2.50)  # 11 km east


def test_a_box_across_the_antimeridian_holds_both_sides():
    fiji = Box(-20, 175, -15, -178)
    assert list(fiji.mask([-17, -17, -17], [178, -179, 0])) == [True, True, False]


def test_a_circle_around_a_pole_spans_every_longitude():
    bounds = Circle(89.5, 0, radius_km=200).bounds()
    assert (bounds.west, bounds.east, bounds.north) == (-180.0, 180.0, 90.0)


def test_a_circle_near_the_antimeridian_gives_a_box_across_it():
    bounds = Circle(0, 179.9, radius_km=50).bounds()
    assert bounds.crosses_antimeridian and bounds.mask([0.1], [-179.8])[0]


@pytest.mark.parametrize(
    "near, radius_km, bbox, message",
    [
        ("48.8,2.3", None, None, "near needs radius_km"),
        (None, "5", None, "radius_km needs near"),
        ("48.8,2.3", "5", "1,2,3,4", "not both"),
        ("48.8", "5", None, "near must be <latitude>,<longitude>"),
        ("100,2.3", "5", None, "latitude 100.0 is not between -90 and 90"),
        ("48.8,2.3", "0", None, "radius_km must be more than 0"),
        ("48.8,2.3", "ten", None, "radius_km must be a number"),
        (None, None, "1,2,3", "bbox must be <south>,<west>,<north>,<east>"),
        (None, None, "50,2,40,3", r"south \(50.0\) is north of north"),
        (None, None, "1_0,2,30,4", "with plain numbers"),
    ],
)
def test_a_prior_that_cannot_be_used_is_refused_naming_why(near, radius_km, bbox, message):
    from similarity.models import parse_number

    with pytest.raises(PriorError, match=message):
        priors.parse(near, radius_km, bbox, parse_number=parse_number)


# --- searching inside a prior ---------------------------------------------------------------------------------


@pytest.fixture(params=["snapshot", "delta"])
def gallery(request, sample_gallery):
    """The sample gallery, answered from an index snapshot or from the vectors stored since (no snapshot)."""
    if request.param == "snapshot":
        maintenance.rebuild_index()
    return sample_gallery


def test_a_prior_that_excludes_the_best_match_gives_the_best_match_inside_it(gallery):
    everywhere = post("/api/similar/", PARIS.read_bytes()).json()
    assert everywhere["clip_similarity"]["all_matches"][0]["metadata"]["lat"] == pytest.approx(48.886706)
    inside = post("/api/similar/", PARIS.read_bytes(), bbox=TUSCANY_BOX, top_k=5).json()
    assert inside["prior"] == {"type": "bbox", "south": 43.4, "west": 11.8, "north": 43.55, "east": 11.95}
    matches = inside["clip_similarity"]["all_matches"]
    tuscany = ReferencePhoto.objects.filter(title__startswith="Street in Tuscany")
    assert {match["id"] for match in matches} == set(tuscany.values_list("pk", flat=True))
    best_in_tuscany = max(matches, key=lambda match: match["similarity"])
    assert matches[0] == best_in_tuscany


def test_a_prior_with_no_photo_inside_answers_no_coordinates_with_the_reason(gallery):
    body = post("/api/similar/", PARIS.read_bytes(), near="-33.86,151.21", radius_km="50").json()  # Sydney
    assert body["coordinates"] is None and body["clip_similarity"]["all_matches"] == []
    assert body["reason"] == "No embedded reference photo lies inside the location prior."
    assert body["prior"] == {"type": "near", "latitude": -33.86, "longitude": 151.21, "radius_km": 50.0}


def test_a_photo_moved_after_the_snapshot_is_found_where_it_is_now(sample_gallery):
    maintenance.rebuild_index()
    paris_photo = ReferencePhoto.objects.get(title__contains="10265353")
    paris_photo.latitude, paris_photo.longitude = LUND
    paris_photo.save()
    near_lund = {"near": f"{LUND[0]},{LUND[1]}", "radius_km": "1"}
    found = post("/api/similar/", PARIS.read_bytes(), **near_lund).json()["clip_similarity"]["all_matches"]
    assert found[0]["id"] == paris_photo.pk and found[0]["similarity"] > 0.99
    near_paris = {"near": "48.886706,2.343104", "radius_km": "1"}
    left = post("/api/similar/", PARIS.read_bytes(), **near_paris).json()["clip_similarity"]["all_matches"]
    assert paris_photo.pk not in {match["id"] for match in left}


def test_a_stored_photos_neighbours_and_text_take_a_prior_too(gallery):
    photo = ReferencePhoto.objects.get(title__contains="10265353")
    body = APIClient().get(f"/api/photos/{photo.pk}/similar/", {"bbox": TUSCANY_BOX}).json()
    assert body["prior"]["type"] == "bbox"
    assert all(43.4 <= match["metadata"]["lat"] <= 43.55 for match in body["clip_similarity"]["all_matches"])


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"near": "48.8,2.3"}, "near needs radius_km"),
        ({"bbox": "1,2,3"}, "bbox must be"),
        ({"near": "48.8,2.3", "radius_km": "-1"}, "radius_km must be more than 0"),
        ({"near": "48.8,2.3", "radius_km": "5", "bbox": "1,2,3,4"}, "not both"),
    ],
)
@pytest.mark.parametrize("endpoint", ["/api/similar/", "/api/locate/"])
def test_bad_priors_are_a_400_naming_the_problem(db, endpoint, fields, message):
    response = post(endpoint, make_image_bytes(1), **fields)
    assert response.status_code == 400 and message in response.json()["error"]


def test_an_index_built_before_positions_were_kept_answers_priors_from_stored_vectors(sample_gallery, settings):
    import json

    from similarity import index

    manifest = maintenance.rebuild_index()
    data = json.loads(index.manifest_path().read_text())
    data.update(format_version=1, positions_file="")
    index.manifest_path().write_text(json.dumps(data))
    index.forget_loaded_index()
    body = post("/api/similar/", PARIS.read_bytes(), bbox=TUSCANY_BOX).json()
    assert {match["metadata"]["lat"] < 44 for match in body["clip_similarity"]["all_matches"]} == {True}
    from similarity.search.vectors import get_encoder

    assert "older version" in maintenance.compaction_reason(get_encoder())
    assert manifest.positions_file


def test_the_snapshot_filters_inside_faiss_and_probes_more_lists_the_fewer_the_candidates(unit_vectors, monkeypatch):
    from datetime import datetime, timezone

    import faiss

    from similarity import index

    vectors = unit_vectors(2000, dim=16)
    ids = np.arange(2000) + 1
    layout = index.IndexLayout("ivf", "float32", nlist=40, nprobe=2)
    latitudes = np.where(ids % 100 == 0, 10.0, 50.0)  # 20 photos at latitude 10
    manifest = index.save_index(
        ids,
        vectors,
        encoder="t",
        built_at=datetime.now(timezone.utc),
        layout=layout,
        positions=(latitudes, np.zeros(2000)),
    )
    loaded = index.read_index_file(manifest)
    among = loaded.positions.ids_inside([Box(5, -1, 15, 1)])
    assert sorted(among) == list(range(100, 2001, 100))
    probed = []
    parameters = faiss.SearchParametersIVF
    monkeypatch.setattr(
        faiss, "SearchParametersIVF", lambda **kwargs: probed.append(kwargs["nprobe"]) or parameters(**kwargs)
    )
    scores, found = loaded.search(vectors[[4]], 5, among=among)
    assert probed == [20]  # 1 % of the ids: sqrt(100) = 10 times the 2 lists probed unfiltered
    exact = sorted(among, key=lambda i: -float(vectors[i - 1] @ vectors[4]))[:5]
    assert list(found[0]) == exact


# --- the locate pipeline: coarse answers narrow the sources after them -------------------------------------


class CityFromSigns:
    """Another team's source that only knows the town: a coarse answer."""

    name = "ocr_signs"

    def __init__(self, latitude=43.4675, longitude=11.8818, radius_m=5000):
        self.latitude, self.longitude, self.radius_m = latitude, longitude, radius_m

    def locate(self, query):
        from similarity.locate import Location

        return Location(self.latitude, self.longitude, 0.6, self.radius_m, {"text": "Anghiari"})


def test_a_coarse_source_narrows_the_similarity_source_after_it(sample_gallery, settings):
    settings.GEOLOCATOR_SOURCES = [
        {"path": "tests.test_priors.CityFromSigns", "priority": 20},
        {"path": "similarity.locate.sources.ReferenceSimilaritySource", "priority": 50},
    ]
    body = post("/api/locate/", PARIS.read_bytes()).json()
    reports = {report["name"]: report for report in body["sources"]}
    assert reports["ocr_signs"]["status"] == "coarse" and "search inside it" in reports["ocr_signs"]["detail"]
    similarity = reports["clip_similarity"]
    assert similarity["result"]["priors"] == [
        {"type": "near", "latitude": 43.4675, "longitude": 11.8818, "radius_km": 5.0}
    ]
    assert similarity["result"]["matches"] and all(43.4 < m["latitude"] < 43.5 for m in similarity["result"]["matches"])


def test_with_no_precise_answer_the_coarse_one_is_final(db, settings):
    settings.GEOLOCATOR_SOURCES = [
        {"path": "tests.test_priors.CityFromSigns", "priority": 20},
        {"path": "similarity.locate.sources.ReferenceSimilaritySource", "priority": 50},
    ]
    body = post("/api/locate/", make_image_bytes(3)).json()  # an empty gallery: similarity has nothing
    assert body["final"] == {
        "source": "ocr_signs",
        "latitude": 43.4675,
        "longitude": 11.8818,
        "confidence": 0.6,
        "radius_m": 5000,
        "coarse": True,
    }


def test_how_precise_a_final_answer_must_be_is_set_per_source(db, settings):
    settings.GEOLOCATOR_SOURCES = [
        {"path": "tests.test_priors.CityFromSigns", "priority": 20, "final_within_m": 10_000},
        {"path": "similarity.locate.sources.ReferenceSimilaritySource", "priority": 50},
    ]
    body = post("/api/locate/", make_image_bytes(3)).json()
    assert body["sources"][0]["status"] == "success" and body["sources"][1]["status"] == "skipped"


def test_a_request_prior_applies_to_every_source(sample_gallery):
    body = post("/api/locate/", PARIS.read_bytes(), bbox=TUSCANY_BOX).json()
    assert body["prior"]["type"] == "bbox"
    similarity = next(report for report in body["sources"] if report["name"] == "clip_similarity")
    assert all(43.4 < m["latitude"] < 43.55 for m in similarity["result"]["matches"])
