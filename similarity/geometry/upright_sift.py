"""Upright SIFT in one pass: keypoints and their descriptors from a single Gaussian pyramid.

OpenCV's SIFT builds its scale space twice for upright features: ``detect``
builds it, finds the extrema and gives each keypoint its dominant
orientations (work an upright descriptor throws away); ``compute`` with the
angles set to 0 builds it all again. Measured on a 1,024 x 768 photo (one
thread), the two passes took 161 + 169 ms, of which the second pyramid alone
about 65 ms and the orientations about 60.

This module follows OpenCV's algorithm step for step (Lowe 2004 as
implemented in OpenCV 4-5: the image doubled, 3 layers an octave, sigma 1.6,
the same contrast and edge thresholds, the same sub-pixel refinement, the
same 4 x 4 x 8 descriptor with its 0.2 clipping) but builds the pyramid once,
gives each spot one keypoint at angle 0 and computes its descriptor straight
from the layer it was found in. The pyramid is OpenCV's resize and its
Gaussian kernels and borders, blurred by a compiled separable filter (within
float rounding of OpenCV's GaussianBlur, faster on large octaves); the
per-pixel loops (the extremum scan with each difference of Gaussians taken
once, the refinement, the histograms) are in sift_kernels.py and the blurs in
blur_kernels.py, compiled by Numba, single-threaded (a build already runs a
photo per core). The keypoints and descriptors agree
with OpenCV's detect + compute of the same upright keypoints (tested in
tests/test_upright_sift.py).

No Django here.
"""

from __future__ import annotations

import functools
import math
from concurrent.futures import Executor
from typing import Callable, TypeVar

import numpy as np

T = TypeVar("T")

LAYERS = 3  # per octave (OpenCV's nOctaveLayers)
SIGMA = 1.6
INITIAL_SIGMA = 0.5  # the blur a camera's image is assumed to have
CONTRAST_THRESHOLD = 0.04
EDGE_THRESHOLD = 10.0
BORDER = 5  # no keypoint closer to an octave's edge (SIFT_IMG_BORDER)
INTERPOLATION_STEPS = 5
DESCRIPTOR_WIDTH = 4  # 4 x 4 cells ...
ORIENTATION_BINS = 8  # ... of 8 orientations: 128 values
CELL_SCALE = 3.0  # a cell is 3 sigma wide (SIFT_DESCR_SCL_FCTR)
CLIP = 0.2  # no value above 0.2 of the descriptor's length (SIFT_DESCR_MAG_THR)
DESCRIPTOR_SCALE = 512.0  # values scaled, then rounded to 0..255 (SIFT_INT_DESCR_FCTR)
PARALLEL_ROWS = 256  # octaves with fewer rows are scanned on one thread: splitting costs more than it saves


def _compiled():
    """The Numba kernels (compiled on first use, then read from Numba's cache on disk)."""
    from similarity.geometry import sift_kernels

    return sift_kernels.extrema, sift_kernels.refine, sift_kernels.describe


def _octave_count(base_shape: tuple[int, int]) -> int:
    """OpenCV's count for the doubled image: log2 of its short side less 2, plus the doubled octave."""
    return max(1, round(math.log2(min(base_shape)) - 2) + 1)


def gaussian_pyramid(gray: np.ndarray, helper: Executor | None = None) -> list[np.ndarray]:
    """The octaves of the doubled image, as OpenCV's SIFT builds them: each an array of LAYERS + 3 Gaussian
    layers. With a ``helper``, each blur of an octave of PARALLEL_ROWS rows or more is split in two."""
    import cv2

    image = gray.astype(np.float32)
    doubled = cv2.resize(image, (image.shape[1] * 2, image.shape[0] * 2), interpolation=cv2.INTER_LINEAR)
    blur = math.sqrt(max(SIGMA * SIGMA - 4 * INITIAL_SIGMA * INITIAL_SIGMA, 0.01))
    k = 2.0 ** (1.0 / LAYERS)
    steps = [math.sqrt((SIGMA * k**i) ** 2 - (SIGMA * k ** (i - 1)) ** 2) for i in range(1, LAYERS + 3)]
    octaves: list[np.ndarray] = []
    for octave in range(_octave_count(doubled.shape)):
        if octave:
            previous = octaves[-1][LAYERS]
            size = (previous.shape[1] // 2, previous.shape[0] // 2)
            layers = np.empty((LAYERS + 3, size[1], size[0]), np.float32)
            cv2.resize(previous, size, dst=layers[0], interpolation=cv2.INTER_NEAREST)
        else:
            layers = np.empty((LAYERS + 3, *doubled.shape), np.float32)
            gaussian_blur(doubled, blur, layers[0], helper)
        for i, sigma in enumerate(steps, start=1):
            gaussian_blur(layers[i - 1], sigma, layers[i], helper)
        octaves.append(layers)
    return octaves


@functools.cache
def half_gaussian(sigma: float) -> np.ndarray:
    """The centre and right half of the Gaussian kernel OpenCV's GaussianBlur takes for a float image (its
    size round(8 sigma + 1), odd; its weights getGaussianKernel's)."""
    import cv2

    size = round(sigma * 8 + 1) | 1
    return np.ascontiguousarray(cv2.getGaussianKernel(size, sigma, cv2.CV_32F).ravel()[size // 2 :])


def gaussian_blur(source: np.ndarray, sigma: float, target: np.ndarray, helper: Executor | None = None) -> None:
    """``source`` blurred with OpenCV's Gaussian kernel and borders into ``target`` (blur_kernels.py:
    measured on a 2,048 x 1,536 octave, 37 ms for the six blurs against 51 ms for OpenCV's GaussianBlur; the
    values within float rounding of its). With a ``helper`` (and PARALLEL_ROWS rows or more), the top half of
    the rows on the calling thread and the bottom half on the helper: the same result."""
    from similarity.geometry.blur_kernels import gaussian_blur as blur

    kernel, rows = half_gaussian(sigma), source.shape[0]
    if helper is None or rows < PARALLEL_ROWS:
        blur(source, kernel, target, 0, rows)
        return
    _both(
        helper,
        lambda: blur(source, kernel, target, 0, rows // 2),
        lambda: blur(source, kernel, target, rows // 2, rows),
    )


def scale_space_extrema(layers: np.ndarray, helper: Executor | None = None) -> np.ndarray:
    """(layer, row, col) of the extrema of an octave's differences of Gaussians (``layers``: its Gaussian
    layers), before refinement: OpenCV's threshold is half the contrast threshold, in 0..255 units. With a
    ``helper``, it scans half the rows while the calling thread scans the other half."""
    extrema, _, _ = _compiled()
    threshold = np.float32(math.floor(0.5 * CONTRAST_THRESHOLD / LAYERS * 255))
    rows = layers.shape[1]
    if helper is None or rows < PARALLEL_ROWS:
        return extrema(layers, threshold, BORDER, 0, rows)
    upper, lower = _both(
        helper,
        lambda: extrema(layers, threshold, BORDER, 0, rows // 2),
        lambda: extrema(layers, threshold, BORDER, rows // 2, rows),
    )
    return np.concatenate([upper, lower])


def _both(helper: Executor, first: Callable[[], T], second: Callable[[], T]) -> tuple[T, T]:
    """first() on the calling thread while ``helper`` runs second(): the caller never waits on a queue it
    occupies, so nested use cannot deadlock."""
    other = helper.submit(second)
    return first(), other.result()


def detect_and_describe(
    gray: np.ndarray, max_features: int, helper: Executor | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``max_features`` strongest upright SIFT keypoints of a uint8 grayscale image, one per spot:
    positions (n, 2) in its pixels, sizes (n,) as OpenCV's KeyPoint.size, and SIFT descriptors (n, 128),
    float32 holding 0..255 as OpenCV's do; strongest first. With a ``helper`` thread (an Executor whose
    tasks never wait on the caller), the blurs of the larger octaves, the scan of the largest octave and the
    descriptors are split in two:
    a lookup's query, alone on an idle core, is done sooner; a build, a photo per core already, passes none.
    The answers are the same either way."""

    _, refine, describe = _compiled()
    found = []  # (octave, rows of refine)
    pyramid = gaussian_pyramid(gray, helper)
    for octave, layers in enumerate(pyramid):
        candidates = scale_space_extrema(layers, helper)
        if not len(candidates):
            continue
        refined = refine(
            layers,
            candidates,
            BORDER,
            LAYERS,
            np.float32(CONTRAST_THRESHOLD),
            np.float32(EDGE_THRESHOLD),
            INTERPOLATION_STEPS,
        )
        refined = refined[refined[:, 6] > 0]
        if len(refined):
            found.append((octave, refined))
    empty = np.zeros((0, 2), np.float32), np.zeros(0, np.float32), np.zeros((0, 128), np.float32)
    if not found:
        return empty
    octaves = np.concatenate([np.full(len(rows), octave, np.int32) for octave, rows in found])
    rows = np.concatenate([rows for _, rows in found])
    # One keypoint per spot: several extrema can refine to the same position.
    _, distinct = np.unique(np.column_stack([octaves, rows[:, :3]]).astype(np.int64), axis=0, return_index=True)
    octaves, rows = octaves[distinct], rows[distinct]
    strongest = np.argsort(-rows[:, 6], kind="stable")[:max_features]
    octaves, rows = octaves[strongest], rows[strongest]
    layer, row, col, d_layer, d_row, d_col = (rows[:, i] for i in range(6))
    octave_points = np.column_stack([col + d_col, row + d_row]).astype(np.float32)  # in the octave's pixels
    scales = (SIGMA * 2.0 ** ((layer + d_layer) / LAYERS)).astype(np.float32)  # sigma in the octave's pixels
    descriptors = np.zeros((len(rows), DESCRIPTOR_WIDTH**2 * ORIENTATION_BINS), np.float32)

    def describe_every(step: int, start: int) -> None:  # keypoints start, start + step, ...: strong and weak alike
        chosen = np.zeros(len(rows), bool)
        chosen[start::step] = True
        for octave in np.unique(octaves):
            for level in np.unique(layer[octaves == octave]):
                here = np.nonzero(chosen & (octaves == octave) & (layer == level))[0]
                if len(here):
                    descriptors[here] = describe(
                        pyramid[octave][int(level)],
                        octave_points[here],
                        scales[here],
                        DESCRIPTOR_WIDTH,
                        ORIENTATION_BINS,
                        CELL_SCALE,
                        CLIP,
                        DESCRIPTOR_SCALE,
                    )

    if helper is None:
        describe_every(1, 0)
    else:
        _both(helper, lambda: describe_every(2, 0), lambda: describe_every(2, 1))
    to_image = (2.0 ** octaves.astype(np.float32) * 0.5)[:, None]  # the doubled image's octave 0 is octave -1
    points = octave_points * to_image
    sizes = scales * 2 * to_image[:, 0]
    return points.astype(np.float32), sizes.astype(np.float32), descriptors
