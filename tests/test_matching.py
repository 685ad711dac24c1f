"""Putative matches between two photos' codes: exact integer distances, whatever the CPU or the block size."""

import numpy as np
import pytest
from PIL import Image

from similarity.geometry import matching, verification
from similarity.runtime.hardware import INT8_DOT_FLAGS, read_cpuinfo
from tests.conftest import SAMPLE_GALLERY

LUND_01 = SAMPLE_GALLERY / "photos" / "lund" / "01.jpg"
LUND_02 = SAMPLE_GALLERY / "photos" / "lund" / "02.jpg"


def reference_matches(query: np.ndarray, candidate: np.ndarray, ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """The definition, in int64 over the whole distance matrix: for each candidate keypoint its nearest query
    keypoint (the first, on a tie), kept when nearer than ``ratio`` times the second nearest and when no
    candidate keypoint is nearer to that query keypoint; one candidate per query keypoint (the first)."""
    q, c = query.astype(np.int64), candidate.astype(np.int64)
    distances = (c * c).sum(1)[:, None] + (q * q).sum(1)[None, :] - 2 * c @ q.T
    nearest = distances.argmin(axis=1)
    everyone = np.arange(len(c))
    first = distances[everyone, nearest]
    others = distances.copy()
    others[everyone, nearest] = np.iinfo(np.int64).max
    second = others.min(axis=1)
    keep = (first < ratio * ratio * second) & (first == distances.min(axis=0)[nearest])
    candidate_index = np.flatnonzero(keep)
    query_index, first_of = np.unique(nearest[candidate_index], return_index=True)
    return query_index, candidate_index[first_of]


@pytest.fixture(scope="module")
def lund_codes() -> tuple[np.ndarray, np.ndarray]:
    with Image.open(LUND_01) as first, Image.open(LUND_02) as second:
        return verification.extract(first.convert("RGB")).codes, verification.extract(second.convert("RGB")).codes


def extreme_codes(rows: int, seed: int) -> np.ndarray:
    """Codes at the ends of the int8 range: u8 x s8 products whose pairs overflow int16 (255 x 127 x 2)."""
    return np.random.default_rng(seed).choice(np.array([-127, -126, 126, 127], np.int8), size=(rows, 64))


def test_this_cpu_takes_the_product_as_u8_by_s8_only_with_int8_dot_product_instructions():
    _, flags = read_cpuinfo()

    assert matching.signed_product() == any(flag in flags for flag in INT8_DOT_FLAGS)


def test_the_product_this_cpu_takes_is_exact_at_the_ends_of_the_code_range():
    query, candidate = extreme_codes(300, seed=1), extreme_codes(200, seed=2)

    product = matching.CodeMatcher(query).product(candidate)

    assert np.array_equal(product, candidate.astype(np.int64) @ query.astype(np.int64).T)


def test_the_u8_by_u8_product_is_exact_on_every_cpu():
    query, candidate = extreme_codes(300, seed=3), extreme_codes(200, seed=4)

    product = matching.CodeMatcher(query, signed=False).product(candidate)

    assert np.array_equal(product, candidate.astype(np.int64) @ query.astype(np.int64).T)


def test_matches_of_one_scene_are_the_mutual_nearest_neighbours_that_pass_the_ratio_test(lund_codes):
    query, candidate = lund_codes

    found = matching.CodeMatcher(query).matches(candidate, verification.RATIO)

    expected = reference_matches(query, candidate, verification.RATIO)
    assert len(expected[0]) > 100  # one scene: plenty of matches to get wrong
    assert all(np.array_equal(a, b) for a, b in zip(found, expected))


def test_tied_keypoints_fail_the_ratio_test_or_match_once():
    rng = np.random.default_rng(5)
    query = rng.integers(-60, 60, size=(500, 64)).astype(np.int8)
    query[10] = query[11]  # two query keypoints alike: a candidate near both fails the ratio test
    candidate = np.clip(query[rng.permutation(500)[:400]] + rng.integers(-3, 4, size=(400, 64)), -127, 127)
    candidate = np.vstack([candidate, candidate[:5], query[10:11]]).astype(np.int8)  # twins: the first matches

    found = matching.CodeMatcher(query).matches(candidate, verification.RATIO)

    expected = reference_matches(query, candidate, verification.RATIO)
    assert len(expected[0]) > 300 and 10 not in expected[0] and 11 not in expected[0]
    assert all(np.array_equal(a, b) for a, b in zip(found, expected))


@pytest.mark.parametrize("block_rows", [1, 7, 2000])
def test_matches_do_not_depend_on_how_the_product_is_cut_into_blocks(lund_codes, monkeypatch, block_rows):
    query, candidate = lund_codes
    in_blocks_of_128 = matching.CodeMatcher(query).matches(candidate, verification.RATIO)

    monkeypatch.setattr(matching, "BLOCK_ROWS", block_rows)

    assert all(
        np.array_equal(a, b)
        for a, b in zip(matching.CodeMatcher(query).matches(candidate, verification.RATIO), in_blocks_of_128)
    )


def test_a_photo_with_fewer_than_two_keypoints_has_no_matches(lund_codes):
    query, _ = lund_codes

    found = matching.CodeMatcher(query).matches(query[:1], verification.RATIO)

    assert [len(indices) for indices in found] == [0, 0]
