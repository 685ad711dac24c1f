import pytest

from similarity.geometry.estimate import VERIFIED_METHOD, CandidatePosition, estimate_position, verified_estimate
from similarity.geometry.geo import haversine_m


def at(north_m: float, similarity: float, origin=(45.0, 7.0)) -> CandidatePosition:
    return CandidatePosition(origin[0] + north_m / 111_195.0, origin[1], similarity)


def test_no_candidates_no_estimate():
    assert estimate_position([], threshold=0.5) is None


def test_a_single_match_gives_its_position_and_the_minimum_radius():
    estimate = estimate_position([at(0, 0.9)], threshold=0.5)
    assert (estimate.latitude, estimate.longitude) == pytest.approx((45.0, 7.0))
    assert estimate.radius_m == 25.0 and estimate.cluster_size == 1


def test_close_matches_are_averaged_by_weight():
    estimate = estimate_position([at(0, 0.9), at(100, 0.9)], threshold=0.5, cluster_radius_m=250)
    middle = at(50, 0)
    assert haversine_m(estimate.latitude, estimate.longitude, middle.latitude, middle.longitude) < 1


def test_a_group_of_strong_matches_outweighs_a_slightly_better_lone_match():
    lone = CandidatePosition(10.0, 10.0, 0.80)
    group = [at(0, 0.795), at(20, 0.795), at(40, 0.79)]
    estimate = estimate_position([lone, *group], threshold=0.5, temperature=0.01)
    assert estimate.cluster_size == 3
    assert haversine_m(estimate.latitude, estimate.longitude, 45.0, 7.0) < 50
    assert estimate.members[0] == 1


def test_a_much_better_lone_match_wins_over_a_weak_group():
    lone = CandidatePosition(10.0, 10.0, 0.95)
    estimate = estimate_position([lone, at(0, 0.7), at(20, 0.7), at(40, 0.7)], threshold=0.5, temperature=0.01)
    assert (estimate.latitude, estimate.longitude) == pytest.approx((10.0, 10.0))


def test_confidence_grows_with_similarity_and_stays_in_range():
    low = estimate_position([at(0, 0.55)], threshold=0.6)
    high = estimate_position([at(0, 0.99)], threshold=0.6)
    assert 0.0 <= low.confidence < 0.5 < high.confidence <= 1.0


def test_confidence_drops_when_the_weight_is_split_between_places():
    alone = estimate_position([at(0, 0.9)], threshold=0.6)
    split = estimate_position([at(0, 0.9), CandidatePosition(10.0, 10.0, 0.9)], threshold=0.6)
    assert split.confidence == pytest.approx(alone.confidence / 2, rel=1e-3)


def test_the_radius_reflects_the_spread_of_the_group():
    estimate = estimate_position([at(0, 0.9), at(200, 0.9)], threshold=0.5, cluster_radius_m=250)
    assert estimate.radius_m == pytest.approx(100, rel=0.02)


def test_verified_matches_near_the_top_one_are_averaged_by_their_inliers():
    top, near = CandidatePosition(55.7000, 13.1900, 0.8), CandidatePosition(55.7002, 13.1900, 0.7)  # 22 m apart

    found = verified_estimate([top, near], [300, 100], None)

    assert found.method == VERIFIED_METHOD and found.members == (0, 1) and found.confidence >= 0.9
    assert haversine_m(found.latitude, found.longitude, top.latitude, top.longitude) == pytest.approx(
        22.2 / 4, rel=0.02
    )


def test_unverified_and_distant_verified_matches_do_not_move_a_verified_answer():
    top = CandidatePosition(55.7000, 13.1900, 0.8)
    unverified = CandidatePosition(55.7001, 13.1900, 0.9)
    far = CandidatePosition(55.7100, 13.1900, 0.7)  # 1.1 km away, verified

    found = verified_estimate([top, unverified, far], [40, 0, 500], None, cluster_radius_m=50)

    assert (found.latitude, found.longitude) == pytest.approx((top.latitude, top.longitude))
    assert found.members == (0,) and found.cluster_size == 1
