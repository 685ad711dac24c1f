"""The coverage map: the gallery counted per map cell, server-side."""

import pytest
from rest_framework.test import APIClient

from similarity.gallery import coverage
from similarity.models import ReferencePhoto


def test_a_position_lies_in_its_tile_and_the_tile_bounds_hold_it():
    for latitude, longitude in [(48.8867, 2.3431), (-33.86, 151.21), (0.0, -179.99), (85.0, 179.99)]:
        for zoom in (0, 4, 12, coverage.TILE_ZOOM):
            x, y = coverage.tile_of(latitude, longitude, zoom)
            south, west, north, east = coverage.tile_bounds(zoom, x, y)
            assert south <= latitude <= north and west <= longitude <= east


def test_a_photo_knows_its_tile(make_photo):
    photo = make_photo(1, latitude=48.8867, longitude=2.3431)
    assert (photo.tile_x, photo.tile_y) == coverage.tile_of(48.8867, 2.3431)
    photo.latitude = -33.86
    photo.save()
    assert photo.tile_y == coverage.tile_of(-33.86, 2.3431)[1]


@pytest.fixture
def photos(make_photo):
    places = [(48.8867, 2.3431)] * 3 + [(48.8500, 2.3500)] + [(43.4675, 11.8818)] * 2 + [(-33.86, 151.21)]
    made = [make_photo(seed, latitude=lat, longitude=lon) for seed, (lat, lon) in enumerate(places)]
    made[-1].is_active = False
    made[-1].embedding_status = "failed"
    made[-1].save()
    return made


def test_counts_per_cell_add_up_to_the_gallery(photos, admin_client):
    body = admin_client.get("/api/coverage/", {"zoom": 4}).json()
    assert body["type"] == "FeatureCollection" and body["cell_zoom"] == 6 and body["total"] == 7
    counts = sorted(feature["properties"]["count"] for feature in body["features"])
    assert counts == [1, 2, 4]  # Paris (4 photos within a few km), Tuscany, Sydney
    paris = max(body["features"], key=lambda feature: feature["properties"]["count"])
    (ring,) = paris["geometry"]["coordinates"]
    assert ring[0][0] <= 2.3431 <= ring[1][0] and ring[0][1] <= 48.8867 <= ring[2][1]


def test_zooming_in_splits_a_cell_and_the_area_shown_limits_what_comes_back(photos, admin_client):
    paris = admin_client.get("/api/coverage/", {"zoom": 14, "bbox": "48.8,2.2,48.95,2.5"}).json()
    assert sorted(feature["properties"]["count"] for feature in paris["features"]) == [1, 3]
    assert paris["total"] == 4


def test_the_filters_count_only_photos_in_that_state(photos, admin_client):
    assert admin_client.get("/api/coverage/", {"zoom": 2, "state": "failed"}).json()["total"] == 1
    assert admin_client.get("/api/coverage/", {"zoom": 2, "active": "yes"}).json()["total"] == 6


def test_a_cell_lists_its_photos(photos, admin_client):
    x, y = coverage.tile_of(48.8867, 2.3431, 6)
    body = admin_client.get("/api/coverage/cell/", {"zoom": 6, "x": x, "y": y}).json()
    assert body["count"] == 4 and {photo["id"] for photo in body["photos"]} == {p.pk for p in photos[:4]}
    assert body["photos"][0]["admin_url"].startswith("/admin/similarity/referencephoto/")


def test_an_area_too_detailed_for_the_zoom_is_refused(photos, admin_client):
    response = admin_client.get("/api/coverage/", {"zoom": 20})
    assert response.status_code == 400 and "too many cells" in response.json()["error"]


@pytest.mark.parametrize("params", [{}, {"zoom": 25}, {"zoom": 3, "bbox": "1,2,3"}, {"zoom": 3, "state": "lost"}])
def test_bad_coverage_requests_are_400s(db, admin_client, params):
    assert admin_client.get("/api/coverage/", params).status_code == 400


def test_the_coverage_is_for_curators(photos):
    assert APIClient().get("/api/coverage/", {"zoom": 2}).status_code == 403


def test_many_photos_are_counted_in_one_grouped_query_not_sent(db, django_assert_max_num_queries, admin_client):
    def photo(n):
        latitude, longitude = (n % 170) - 85, (n % 359) - 179.5
        x, y = coverage.tile_of(latitude, longitude)
        return ReferencePhoto(
            image=f"reference/x/{n}.jpg",
            width=1,
            height=1,
            latitude=latitude,
            longitude=longitude,
            sha256=f"{n:064d}",
            tile_x=x,
            tile_y=y,
        )

    ReferencePhoto.objects.bulk_create([photo(n) for n in range(3000)])
    with django_assert_max_num_queries(6):  # session, user and one grouped count
        body = admin_client.get("/api/coverage/", {"zoom": 1}).json()
    assert body["total"] == 3000 and len(body["features"]) <= 64
