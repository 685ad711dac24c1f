"""The per-pixel loops of the one-pass upright SIFT (upright_sift.py), compiled by Numba.

Each follows OpenCV's SIFT (sift.simd.hpp) at angle 0: the scan for scale-space extrema, the sub-pixel
refinement of each, and the descriptor of each keypoint. They run on one thread, release the GIL, and are
written so that LLVM vectorises their inner loops: indices counted from 0 (no negative-index checks),
IEEE division (no zero-division checks), no branches where every pixel passes. Compiled on first use and
cached on disk (``cache=True``).
"""

import math

import numba
import numpy as np

jit = numba.njit(cache=True, nogil=True, error_model="numpy")


@jit
def larger(a, b):
    return a if a > b else b


@jit
def smaller(a, b):
    return a if a < b else b


@jit
def _difference_row_extremes(layers, k, r, left, width, largest, smallest, centre):
    """Row ``r`` of the difference of Gaussians ``k`` (layers k + 1 minus k), columns ``left`` to ``left +
    width``: for each inner column (one in from each end) the largest and smallest of it and its two
    neighbours in the row, and its own value. Branch-free, indices from 0: vectorised."""
    low, high = layers[k, r, left : left + width], layers[k + 1, r, left : left + width]
    inner = width - 2
    for n in range(inner):
        a, b, c = high[n] - low[n], high[n + 1] - low[n + 1], high[n + 2] - low[n + 2]
        largest[n] = larger(larger(a, b), c)
        smallest[n] = smaller(smaller(a, b), c)
        centre[n] = b


@jit
def extrema(layers, threshold, border, first_row, end_row):
    """(layer, row, col) of the pixels of an octave's middle differences of Gaussians (taken from its
    Gaussian ``layers``) that exceed ``threshold`` in size and are a maximum (positive) or minimum (negative)
    of the 3 x 3 x 3 cube around them in scale space (ties count, as in OpenCV), in rows ``first_row`` to
    ``end_row`` (exclusive; none within ``border`` of an edge); row by row, in no particular order.

    Each difference row is taken once: its 3-wide running maximum and minimum are kept for the last three
    rows of every difference (a ring), the 3 x 3 extremes are the rows' extremes of those, and a cube's are
    the extremes of its three layers' 3 x 3 ones: every step branch-free, so the compiler vectorises it.
    Pixels that pass are read off eight flags at a time (few do)."""
    depth, rows, cols = layers.shape
    differences = depth - 1
    found = np.empty((4096, 3), np.int32)
    count = 0
    start, stop = max(border, first_row), min(rows - border, end_row)
    inner = cols - 2 * border
    if start >= stop or inner <= 0:
        return found[:0].copy()
    left, width = border - 1, inner + 2
    row_largest = np.empty((differences, 3, inner), np.float32)  # ring: row r at r % 3
    row_smallest = np.empty((differences, 3, inner), np.float32)
    row_values = np.empty((differences, 3, inner), np.float32)
    square_largest = np.empty((differences, inner), np.float32)
    square_smallest = np.empty((differences, inner), np.float32)
    flags = np.zeros((inner + 7) // 8 * 8, np.uint8)
    words = flags.view(np.uint64)
    for k in range(differences):
        for r in (start - 1, start):
            _difference_row_extremes(
                layers, k, r, left, width, row_largest[k, r % 3], row_smallest[k, r % 3], row_values[k, r % 3]
            )
    for r in range(start, stop):
        for k in range(differences):
            below = (r + 1) % 3
            _difference_row_extremes(
                layers, k, r + 1, left, width, row_largest[k, below], row_smallest[k, below], row_values[k, below]
            )
            a, b, c = row_largest[k, 0], row_largest[k, 1], row_largest[k, 2]
            x, y, z = row_smallest[k, 0], row_smallest[k, 1], row_smallest[k, 2]
            most, least = square_largest[k], square_smallest[k]
            for n in range(inner):
                most[n] = larger(larger(a[n], b[n]), c[n])
                least[n] = smaller(smaller(x[n], y[n]), z[n])
        for s in range(1, differences - 1):
            a, b, c = square_largest[s - 1], square_largest[s], square_largest[s + 1]
            x, y, z = square_smallest[s - 1], square_smallest[s], square_smallest[s + 1]
            values = row_values[s, r % 3]
            for n in range(inner):
                value = values[n]
                flags[n] = ((value > threshold) & (value >= larger(larger(a[n], b[n]), c[n]))) | (
                    (value < -threshold) & (value <= smaller(smaller(x[n], y[n]), z[n]))
                )
            for w in range(len(words)):
                if words[w] == 0:
                    continue
                for n in range(w * 8, min(w * 8 + 8, inner)):
                    if flags[n]:
                        if count == len(found):
                            grown = np.empty((2 * len(found), 3), np.int32)
                            grown[:count] = found
                            found = grown
                        found[count, 0], found[count, 1], found[count, 2] = s, r, n + border
                        count += 1
    return found[:count].copy()


@jit
def solve3(a00, a01, a02, a11, a12, a22, b0, b1, b2):
    """x with A x = b for a symmetric 3 x 3 A (Cramer's rule); zeros when A is singular."""
    c00 = a11 * a22 - a12 * a12
    c01 = a02 * a12 - a01 * a22
    c02 = a01 * a12 - a02 * a11
    det = a00 * c00 + a01 * c01 + a02 * c02
    if abs(det) < 1e-30:
        return 0.0, 0.0, 0.0
    c11 = a00 * a22 - a02 * a02
    c12 = a01 * a02 - a00 * a12
    c22 = a00 * a11 - a01 * a01
    return (
        (c00 * b0 + c01 * b1 + c02 * b2) / det,
        (c01 * b0 + c11 * b1 + c12 * b2) / det,
        (c02 * b0 + c12 * b1 + c22 * b2) / det,
    )


@numba.njit(inline="always")
def dog(layers, s, r, c):
    """The difference of Gaussians at (s, r, c)."""
    return layers[s + 1, r, c] - layers[s, r, c]


@numba.njit(inline="always")
def gradient(layers, s, r, c, scale):
    """The difference of Gaussians' derivatives along x, y and scale at (s, r, c), by central differences."""
    return (
        (dog(layers, s, r, c + 1) - dog(layers, s, r, c - 1)) * scale,
        (dog(layers, s, r + 1, c) - dog(layers, s, r - 1, c)) * scale,
        (dog(layers, s + 1, r, c) - dog(layers, s - 1, r, c)) * scale,
    )


@numba.njit(inline="always")
def spatial_hessian(layers, s, r, c, second, cross):
    """dxx, dyy and dxy of the difference of Gaussians at (s, r, c)."""
    v2 = dog(layers, s, r, c) * 2.0
    dxx = (dog(layers, s, r, c + 1) + dog(layers, s, r, c - 1) - v2) * second
    dyy = (dog(layers, s, r + 1, c) + dog(layers, s, r - 1, c) - v2) * second
    dxy = (
        dog(layers, s, r + 1, c + 1)
        - dog(layers, s, r + 1, c - 1)
        - dog(layers, s, r - 1, c + 1)
        + dog(layers, s, r - 1, c - 1)
    ) * cross
    return dxx, dyy, dxy


@jit
def refine(layers, candidates, border, layers_per_octave, contrast_threshold, edge_threshold, steps):
    """OpenCV's adjustLocalExtrema for every candidate: the sub-pixel, sub-layer position by Newton steps,
    then the contrast and edge tests on the differences of an octave's Gaussian ``layers``. Rows of (layer, row, col, d_layer, d_row, d_col, response); a
    rejected candidate's response is 0."""
    image_scale = 1.0 / 255.0
    first = image_scale * 0.5
    second = image_scale
    cross = image_scale * 0.25
    _, rows, cols = layers.shape
    out = np.zeros((len(candidates), 7), np.float32)
    for k in range(len(candidates)):
        s, r, c = candidates[k, 0], candidates[k, 1], candidates[k, 2]
        xs = xr = xc = 0.0
        converged = False
        rejected = False
        for _ in range(steps):
            g0, g1, g2 = gradient(layers, s, r, c, first)
            dxx, dyy, dxy = spatial_hessian(layers, s, r, c, second, cross)
            v2 = dog(layers, s, r, c) * 2.0
            dss = (dog(layers, s + 1, r, c) + dog(layers, s - 1, r, c) - v2) * second
            dxs = (
                dog(layers, s + 1, r, c + 1)
                - dog(layers, s + 1, r, c - 1)
                - dog(layers, s - 1, r, c + 1)
                + dog(layers, s - 1, r, c - 1)
            ) * cross
            dys = (
                dog(layers, s + 1, r + 1, c)
                - dog(layers, s + 1, r - 1, c)
                - dog(layers, s - 1, r + 1, c)
                + dog(layers, s - 1, r - 1, c)
            ) * cross
            x0, x1, x2 = solve3(dxx, dxy, dxs, dyy, dys, dss, g0, g1, g2)
            xc, xr, xs = -x0, -x1, -x2
            if abs(xs) < 0.5 and abs(xr) < 0.5 and abs(xc) < 0.5:
                converged = True
                break
            if abs(xs) > 7e8 or abs(xr) > 7e8 or abs(xc) > 7e8:
                rejected = True
                break
            c += int(np.rint(xc))
            r += int(np.rint(xr))
            s += int(np.rint(xs))
            if s < 1 or s > layers_per_octave or c < border or c >= cols - border or r < border or r >= rows - border:
                rejected = True
                break
        if rejected or not converged:
            continue
        g0, g1, g2 = gradient(layers, s, r, c, first)
        t = g0 * xc + g1 * xr + g2 * xs
        contrast = dog(layers, s, r, c) * image_scale + t * 0.5
        if abs(contrast) * layers_per_octave < contrast_threshold:
            continue
        dxx, dyy, dxy = spatial_hessian(layers, s, r, c, second, cross)
        trace = dxx + dyy
        det = dxx * dyy - dxy * dxy
        if det <= 0 or trace * trace * edge_threshold >= (edge_threshold + 1) ** 2 * det:
            continue
        out[k, 0], out[k, 1], out[k, 2] = s, r, c
        out[k, 3], out[k, 4], out[k, 5] = xs, xr, xc
        out[k, 6] = abs(contrast)
    return out


@jit
def orientation(dy, dx):
    """atan2(dy, dx) in degrees, 0..360, by OpenCV's fastAtan2 polynomial (about 0.01 degrees off);
    branch-free."""
    ax, ay = abs(dx), abs(dy)
    steep = ay > ax
    t = (ax if steep else ay) / ((ay if steep else ax) + np.float32(1.1920929e-07))
    t2 = t * t
    a = (
        ((np.float32(-2.5397683) * t2 + np.float32(8.9140366)) * t2 - np.float32(18.667444)) * t2
        + np.float32(57.283627)
    ) * t
    a = np.float32(90.0) - a if steep else a
    a = np.float32(180.0) - a if dx < 0 else a
    return np.float32(360.0) - a if dy < 0 else a


@jit
def describe(image, points, scales, width, bins, cell_scale, clip, scale_to):
    """OpenCV's calcSIFTDescriptor at angle 0 for each point (x, y) of ``image`` with its scale: a
    width x width grid of cells, each a histogram of ``bins`` gradient orientations, samples spread over
    neighbouring cells and bins by trilinear interpolation and weighted by a Gaussian of half the grid.
    Upright, the grid is not rotated: a sample's cell coordinates and its Gaussian weight are a row part
    times a column part, computed once per row and per column."""
    rows, cols = image.shape
    out = np.zeros((len(points), width * width * bins), np.float32)
    bins_per_degree = np.float32(bins / 360.0)
    exp_scale = -1.0 / (width * width * 0.5)
    hist = np.zeros((width + 2, width + 2, bins + 2), np.float32)
    diagonal = int(math.sqrt(float(cols) * cols + float(rows) * rows))
    largest = diagonal * 2 + 1
    column_bin = np.empty(largest, np.int64)
    column_fraction = np.empty(largest, np.float32)
    column_weight = np.empty(largest, np.float32)
    samples = np.empty((2, largest), np.float32)  # a row's gradient magnitudes (times the weight), orientations
    for k in range(len(points)):
        px = int(np.rint(points[k, 0]))
        py = int(np.rint(points[k, 1]))
        hist_width = np.float32(cell_scale * scales[k])
        radius = min(int(np.rint(hist_width * 1.4142135623730951 * (width + 1) * 0.5)), diagonal)
        inverse = np.float32(1.0) / hist_width
        first_j, last_j = radius + 1, -radius - 1
        for j in range(-radius, radius + 1):
            c = px + j
            c_rot = np.float32(j) * inverse
            cbin = c_rot + np.float32(width / 2 - 0.5)
            if c <= 0 or c >= cols - 1 or cbin <= -1 or cbin >= width:
                continue
            first_j, last_j = min(first_j, j), max(last_j, j)
            c0 = int(math.floor(cbin))
            column_bin[j + radius] = c0
            column_fraction[j + radius] = cbin - c0
            column_weight[j + radius] = math.exp(c_rot * c_rot * exp_scale)
        hist[:] = 0.0
        for i in range(-radius, radius + 1):
            r = py + i
            r_rot = np.float32(i) * inverse
            rbin = r_rot + np.float32(width / 2 - 0.5)
            if r <= 0 or r >= rows - 1 or rbin <= -1 or rbin >= width:
                continue
            r0 = int(math.floor(rbin))
            rfrac = rbin - r0
            row_weight = math.exp(r_rot * r_rot * exp_scale)
            count = last_j - first_j + 1
            left = px + first_j
            above, below = image[r - 1, left : left + count], image[r + 1, left : left + count]
            here = image[r, left - 1 : left + count + 1]
            weight = column_weight[first_j + radius : first_j + radius + count]
            magnitudes, orientations = samples[0, :count], samples[1, :count]
            for n in range(count):  # branch-free, indices from 0: vectorised
                dx = here[n + 2] - here[n]
                dy = above[n] - below[n]
                magnitudes[n] = math.sqrt(dx * dx + dy * dy) * (row_weight * weight[n])
                orientations[n] = orientation(dy, dx) * bins_per_degree
            for j in range(first_j, last_j + 1):
                magnitude = magnitudes[j - first_j]
                obin = orientations[j - first_j]
                c0 = column_bin[j + radius]
                cfrac = column_fraction[j + radius]
                o0 = int(obin)
                ofrac = obin - o0
                if o0 >= bins:
                    o0 -= bins
                v_r1 = magnitude * rfrac
                v_r0 = magnitude - v_r1
                v_rc11 = v_r1 * cfrac
                v_rc10 = v_r1 - v_rc11
                v_rc01 = v_r0 * cfrac
                v_rc00 = v_r0 - v_rc01
                hist[r0 + 1, c0 + 1, o0] += v_rc00 - v_rc00 * ofrac
                hist[r0 + 1, c0 + 1, o0 + 1] += v_rc00 * ofrac
                hist[r0 + 1, c0 + 2, o0] += v_rc01 - v_rc01 * ofrac
                hist[r0 + 1, c0 + 2, o0 + 1] += v_rc01 * ofrac
                hist[r0 + 2, c0 + 1, o0] += v_rc10 - v_rc10 * ofrac
                hist[r0 + 2, c0 + 1, o0 + 1] += v_rc10 * ofrac
                hist[r0 + 2, c0 + 2, o0] += v_rc11 - v_rc11 * ofrac
                hist[r0 + 2, c0 + 2, o0 + 1] += v_rc11 * ofrac
        norm = 0.0
        for i in range(width):
            for j in range(width):
                hist[i + 1, j + 1, 0] += hist[i + 1, j + 1, bins]
                hist[i + 1, j + 1, 1] += hist[i + 1, j + 1, bins + 1]
                for o in range(bins):
                    value = hist[i + 1, j + 1, o]
                    out[k, (i * width + j) * bins + o] = value
                    norm += value * value
        limit = math.sqrt(norm) * clip
        norm = 0.0
        for v in range(width * width * bins):
            value = min(out[k, v], limit)
            out[k, v] = value
            norm += value * value
        factor = scale_to / max(math.sqrt(norm), 1.1920929e-07)
        for v in range(width * width * bins):
            out[k, v] = min(255.0, max(0.0, np.rint(out[k, v] * factor)))
    return out
