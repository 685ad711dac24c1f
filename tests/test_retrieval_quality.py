"""Retrieval quality of the offline encoder on the shipped sample gallery (real photos).

The wider figure on ../shared/data/places comes from bench/place_recall.py.
"""

import csv

from similarity import search
from tests.conftest import SAMPLE_GALLERY


def test_every_sample_photo_finds_a_photo_of_the_same_place_first(sample_gallery):
    rows = list(csv.DictReader(open(SAMPLE_GALLERY / "manifest.csv")))
    place_by_title = {row["title"]: row["place"] for row in rows}
    place_sizes = {}
    for row in rows:
        place_sizes[row["place"]] = place_sizes.get(row["place"], 0) + 1
    queries = [photo for photo in sample_gallery if place_sizes[place_by_title[photo.title]] > 1]
    assert len(queries) == 9
    wrong = []
    for photo in queries:
        best = search.search_similar_to_photo(photo, top_k=1).best.photo
        if place_by_title[best.title] != place_by_title[photo.title]:
            wrong.append((photo.title, best.title))
    assert wrong == []


def test_photos_of_other_places_score_below_the_default_threshold(sample_gallery):
    rows = {row["title"]: row["place"] for row in csv.DictReader(open(SAMPLE_GALLERY / "manifest.csv"))}
    berlin = next(photo for photo in sample_gallery if rows[photo.title] == "berlin_cathedral")
    result = search.search_similar_to_photo(berlin, top_k=9)
    assert all(match.similarity < result.threshold for match in result.matches)
