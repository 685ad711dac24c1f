"""The evaluation metrics on a small hand-made case whose answers are known."""

import math

import pytest

from similarity.geometry.estimate import CandidatePosition, estimate_position
from similarity.geometry.evaluation import (
    QueryOutcome,
    recall_at_k,
    recommend_threshold,
    share_within_km,
    summarize,
    threshold_sweep,
)
from similarity.geometry.geo import haversine_m, weighted_centre

PARIS = (48.8566, 2.3522)
LONDON = (51.5074, -0.1278)  # 343.5 km from Paris


def test_haversine_paris_london():
    assert haversine_m(*PARIS, *LONDON) == pytest.approx(343_500, rel=0.005)


def test_weighted_centre_across_the_antimeridian():
    latitude, longitude = weighted_centre([(0.0, 179.0), (0.0, -179.0)], [1.0, 1.0])
    assert latitude == pytest.approx(0.0, abs=1e-9)
    assert abs(longitude) == pytest.approx(180.0)


def match(position, similarity, north_m=0.0):
    """A match ``north_m`` metres north of ``position``."""
    return CandidatePosition(position[0] + north_m / 111_195.0, position[1], similarity)


def outcome(truth, matches, estimate_at=None):
    estimate = None
    if estimate_at is not None:
        estimate = estimate_position([CandidatePosition(*estimate_at, 0.9)], threshold=0.5)
    return QueryOutcome("q", truth[0], truth[1], matches, estimate)


@pytest.fixture
def outcomes():
    return [
        # right at once: top-1 10 m away
        outcome(PARIS, [match(PARIS, 0.9, 10), match(LONDON, 0.5)], estimate_at=PARIS),
        # right only at rank 3
        outcome(PARIS, [match(LONDON, 0.7), match(LONDON, 0.6), match(PARIS, 0.55, 5)], estimate_at=LONDON),
        # never right
        outcome(LONDON, [match(PARIS, 0.4)], estimate_at=PARIS),
    ]


def test_recall_at_k(outcomes):
    assert recall_at_k(outcomes, 1, radius_m=25) == pytest.approx(1 / 3)
    assert recall_at_k(outcomes, 5, radius_m=25) == pytest.approx(2 / 3)
    assert recall_at_k(outcomes, 1, radius_m=400_000) == 1.0  # Paris-London is 343 km


def test_share_within_km():
    shares = share_within_km([500.0, 20_000.0, 300_000.0, 5_000_000.0, math.inf])
    assert shares == {"1km": 0.2, "25km": 0.4, "200km": 0.4, "750km": 0.6, "2500km": 0.6}


def test_threshold_sweep_coverage_and_precision(outcomes):
    sweep = threshold_sweep(outcomes, [0.3, 0.6, 0.8, 0.95], radius_m=25)
    assert [row["coverage"] for row in sweep] == pytest.approx([1.0, 2 / 3, 1 / 3, 0.0])
    assert [row["precision"] for row in sweep] == pytest.approx([1 / 3, 1 / 2, 1.0, None], nan_ok=True)
    assert recommend_threshold(sweep, target_precision=0.9) == 0.8
    assert recommend_threshold(sweep, target_precision=0.3) == 0.3
    assert recommend_threshold(threshold_sweep(outcomes, [0.3], radius_m=25), 0.9) is None


def test_summary_has_every_metric(outcomes):
    report = summarize(outcomes, radius_m=25, thresholds=[0.3, 0.8], target_precision=0.9)
    assert report["queries"] == 3
    assert report["recall"] == pytest.approx({"@1": 1 / 3, "@5": 2 / 3, "@10": 2 / 3})
    assert report["within_km"]["top1"]["1km"] == pytest.approx(1 / 3)
    assert report["within_km"]["estimate"]["750km"] == pytest.approx(1.0)
    assert report["median_error_m"]["top1"] == pytest.approx(haversine_m(*PARIS, *LONDON), rel=1e-6)
    assert report["median_error_m"]["estimate"] == pytest.approx(haversine_m(*PARIS, *LONDON), rel=1e-6)
    assert report["recommended_threshold"] == 0.8


def test_summary_refuses_no_queries():
    with pytest.raises(ValueError):
        summarize([], radius_m=25, thresholds=[0.5], target_precision=0.9)
