"""The one-pass upright SIFT finds and describes what OpenCV's SIFT does, from one scale space."""

import functools
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest
from PIL import Image

from similarity.geometry import upright_sift, verification
from tests.conftest import SAMPLE_GALLERY

PHOTOS = [SAMPLE_GALLERY / "photos" / "lund" / "01.jpg", SAMPLE_GALLERY / "photos" / "berlin" / "01.jpg"]


def working_gray(path) -> np.ndarray:
    """The photo as verification sees it: grayscale, long side at most 1,024 px."""
    with Image.open(path) as image:
        gray = np.asarray(image.convert("L"))
    scale = min(1.0, verification.LONG_SIDE / max(gray.shape))
    size = (round(gray.shape[1] * scale), round(gray.shape[0] * scale))
    return cv2.resize(gray, size, interpolation=cv2.INTER_AREA) if scale < 1 else gray


def opencv_upright(gray: np.ndarray, budget: int):
    """OpenCV's SIFT, two passes: the strongest distinct keypoints of detect, described by compute at angle 0."""
    sift = cv2.SIFT_create(nfeatures=2 * budget)
    distinct = {}
    for keypoint in sift.detect(gray, None):
        distinct.setdefault((round(keypoint.pt[0], 2), round(keypoint.pt[1], 2), round(keypoint.size, 2)), keypoint)
    for keypoint in distinct.values():
        keypoint.angle = 0.0
    strongest = sorted(distinct.values(), key=lambda k: -k.response)[:budget]
    keypoints, descriptors = sift.compute(gray, strongest)
    points = np.array([k.pt for k in keypoints], np.float32)
    return points, np.array([k.size for k in keypoints], np.float32), descriptors


def nearest(ours: np.ndarray, theirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each of our points, the index of OpenCV's nearest and its distance in pixels."""
    distances = ((ours[:, None, :] - theirs[None, :, :]) ** 2).sum(axis=2)
    index = distances.argmin(axis=1)
    return index, np.sqrt(distances[np.arange(len(ours)), index])


@functools.cache
def side_by_side(path):
    """Ours and OpenCV's on one photo (computed once for the tests below), with, for each of our keypoints, the
    index of OpenCV's nearest and whether it is within 0.05 px."""
    gray = working_gray(path)
    ours, theirs = upright_sift.detect_and_describe(gray, 2000), opencv_upright(gray, 2000)
    index, distance = nearest(ours[0], theirs[0])
    return ours, theirs, index, distance < 0.05


@pytest.mark.parametrize("path", PHOTOS, ids=lambda p: p.parent.name)
def test_keypoints_are_opencvs_upright_keypoints(path):
    (points, sizes, _), (_, their_sizes, _), index, same = side_by_side(path)

    assert len(points) == 2000
    assert same.mean() >= 0.99
    assert np.allclose(sizes[same], their_sizes[index[same]], rtol=1e-3)


@pytest.mark.parametrize("path", PHOTOS, ids=lambda p: p.parent.name)
def test_descriptors_are_opencvs_upright_descriptors(path):
    (_, _, descriptors), (_, _, their_descriptors), index, same = side_by_side(path)

    difference = np.abs(descriptors[same] - their_descriptors[index[same]]).max(axis=1)

    # Both round to 0..255; OpenCV's orientations come from the same polynomial, so at most a value's rounding
    # differs.
    assert descriptors.dtype == np.float32 and descriptors.shape == (2000, 128)
    assert np.percentile(difference, 99) <= 1


def test_keypoints_are_one_per_spot_and_strongest_first():
    points, sizes, descriptors = upright_sift.detect_and_describe(working_gray(PHOTOS[0]), 500)

    assert len(points) == len(sizes) == len(descriptors) == 500
    assert len(np.unique(np.column_stack([points, sizes]), axis=0)) == 500
    assert np.all(descriptors.max(axis=1) > 0)


def test_the_budget_keeps_the_strongest():
    gray = working_gray(PHOTOS[0])
    few, _, _ = upright_sift.detect_and_describe(gray, 200)
    many, _, _ = upright_sift.detect_and_describe(gray, 2000)

    assert np.array_equal(few, many[:200])


def test_a_helper_thread_changes_nothing_in_the_answer():
    gray = working_gray(PHOTOS[1])
    alone = upright_sift.detect_and_describe(gray, 2000)
    with ThreadPoolExecutor(1) as helper:
        shared = upright_sift.detect_and_describe(gray, 2000, helper)

    assert all(np.array_equal(a, b) for a, b in zip(alone, shared))


def test_a_blur_split_between_two_threads_is_the_blur_on_one():
    gray = working_gray(PHOTOS[1])
    alone = upright_sift.gaussian_pyramid(gray)
    with ThreadPoolExecutor(1) as helper:
        shared = upright_sift.gaussian_pyramid(gray, helper)

    assert len(alone) == len(shared) and len(alone[0][0]) >= upright_sift.PARALLEL_ROWS  # the split was taken
    assert all(np.array_equal(a, b) for a, b in zip(alone, shared))


@pytest.mark.parametrize("shape", [(1536, 2048), (300, 257), (13, 13), (7, 5), (2, 30), (30, 2), (1, 1)])
@pytest.mark.parametrize("sigma", [1.249, 3.09])
def test_a_blur_is_opencvs_gaussian_blur_within_float_rounding(shape, sigma):
    image = np.random.default_rng(3).uniform(0, 255, shape).astype(np.float32)
    blurred = np.empty_like(image)

    upright_sift.gaussian_blur(image, sigma, blurred)

    # a few units in the last place of values up to 255 (the sums run in another order), borders included
    assert np.abs(blurred - cv2.GaussianBlur(image, (0, 0), sigma, sigmaY=sigma)).max() <= 1e-4


def test_a_flat_image_has_no_keypoints():
    points, sizes, descriptors = upright_sift.detect_and_describe(np.full((300, 400), 128, np.uint8), 2000)

    assert points.shape == (0, 2) and sizes.shape == (0,) and descriptors.shape == (0, 128)


def test_a_tiny_image_is_described_without_reading_outside_it():
    gray = np.zeros((12, 9), np.uint8)
    gray[4:8, 3:6] = 255

    points, _, descriptors = upright_sift.detect_and_describe(gray, 2000)

    assert len(points) == len(descriptors)
    assert np.all((points >= 0) & (points <= [9, 12]))


def test_the_scan_finds_exactly_the_extrema_of_26_neighbours():
    layers = np.random.default_rng(7).uniform(0, 40, (upright_sift.LAYERS + 3, 200, 200)).astype(np.float32)
    dog = layers[1:] - layers[:-1]
    border, threshold = upright_sift.BORDER, 1.0
    expected = set()
    for s in range(1, len(dog) - 1):
        for r in range(border, dog.shape[1] - border):
            for c in range(border, dog.shape[2] - border):
                value, cube = dog[s, r, c], dog[s - 1 : s + 2, r - 1 : r + 2, c - 1 : c + 2]
                if (value > threshold and value >= cube.max()) or (value < -threshold and value <= cube.min()):
                    expected.add((s, r, c))

    found = upright_sift.scale_space_extrema(layers)

    assert len(found) > 4096  # more than the scan's first buffer holds
    assert {tuple(row) for row in found.tolist()} == expected
