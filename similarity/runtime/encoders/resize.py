"""The encoders' downscale: Pillow's own resize, with its costly pass split over two threads.

Pillow resizes in two passes, each rounded to 8 bits: along the rows
(horizontal), then along the columns (vertical), on one thread. Shrinking a
photo to a model's input, the horizontal pass over every source row is most
of the work (a 2000x1500 draft to 384x384: about nine tenths). :func:`resize`
runs that pass on two row bands at once (Pillow releases the GIL while it
resamples; each band is cut out and resized along its rows only, and a row's
pixels do not depend on its neighbours, so exact), then the vertical pass
once, over the same rows and with the same box as Pillow's single call, so
the pixels are that call's (tests/test_resize.py), sooner when a second core
is free (bench/RESULTS.md).
"""

from __future__ import annotations

import math

from similarity.threads import LazyThreadPool

BANDS = 2  # the horizontal pass's row bands: two cores are the common case
MIN_BAND_ROWS = 64  # fewer source rows per band: one call is cheaper than a thread handoff
# Filter support (in source pixels at scale 1) of the filters banded; others resize in one call.
SUPPORT = {"BILINEAR": 1.0, "BICUBIC": 2.0}


def resize(image, size: tuple[int, int], resample, *, box=None, reducing_gap: float | None = None):
    """``image.resize(size, resample, box=box, reducing_gap=reducing_gap)`` with the horizontal pass on two threads.

    Banded when ``image`` is L or RGB, the filter bilinear or bicubic, and
    Pillow would not box-reduce first (``reducing_gap`` on a large shrink);
    otherwise it is Pillow's one call.
    """
    from PIL import Image

    width, height = size
    x0, y0, x1, y1 = box if box is not None else (0.0, 0.0, float(image.width), float(image.height))
    filter_name = Image.Resampling(resample).name
    if (
        image.mode not in ("L", "RGB")
        or filter_name not in SUPPORT
        or _reduces_first((x0, y0, x1, y1), size, reducing_gap)
        or width == image.width  # no horizontal pass to split
    ):
        return image.resize(size, resample, box=box, reducing_gap=reducing_gap)
    # the rows the vertical pass reads: from the top (so its box is Pillow's own) to the filter's reach below the box
    last = min(image.height, math.ceil(y1 + SUPPORT[filter_name] * max(1.0, (y1 - y0) / height) + 1))
    if last < BANDS * MIN_BAND_ROWS:
        return image.resize(size, resample, box=box, reducing_gap=reducing_gap)
    edges = [last * band // BANDS for band in range(BANDS + 1)]

    def horizontal_pass(top: int, bottom: int):
        # On the band's own rows, with a box spanning all of them: Pillow then skips its vertical pass
        # (a 1:1 pass, exact but a third of the band's time) and the copy costs less than that pass.
        rows = bottom - top
        return image.crop((0, top, image.width, bottom)).resize((width, rows), resample, box=(x0, 0, x1, rows))

    later = [
        (_band_threads.get().submit(horizontal_pass, top, bottom), top, bottom)
        for top, bottom in zip(edges[1:-1], edges[2:])
    ]
    bands = [horizontal_pass(edges[0], edges[1])]
    for future, top, bottom in later:  # a band no thread has started yet (all busy): this thread does it
        bands.append(horizontal_pass(top, bottom) if future.cancel() else future.result())
    widened = Image.new(image.mode, (width, last))
    for top, band in zip(edges, bands):
        widened.paste(band, (0, top))
    return widened.resize(size, resample, box=(0, y0, width, y1))


def _reduces_first(box, size, reducing_gap: float | None) -> bool:
    """Whether Pillow would box-reduce before resampling (its rule in Image.resize)."""
    if reducing_gap is None:
        return False
    return int((box[2] - box[0]) / size[0] / reducing_gap) > 1 or int((box[3] - box[1]) / size[1] / reducing_gap) > 1


# The threads that take every band but the first (the caller computes that one).
_band_threads = LazyThreadPool("resize-band", lambda: BANDS - 1)
