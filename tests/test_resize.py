"""The encoders' downscale (similarity/runtime/encoders/resize.py): Pillow's pixels, the costly pass on two threads."""

import threading

import numpy as np
import pytest
from PIL import Image

from similarity.runtime.encoders import resize as banded


def detailed_image(width: int, height: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    """Noise over a gradient: every pixel differs from its neighbours, so any shifted filter shows."""
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4}[mode]
    gradient = np.linspace(0, 160, width)[None, :, None] + np.linspace(0, 60, height)[:, None, None]
    pixels = np.clip(gradient + rng.integers(0, 96, (height, width, channels)), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels).convert(mode)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image).astype(np.int16)


@pytest.mark.parametrize(
    "source, size, box",
    [
        ((2000, 1500), (384, 384), None),  # a 12 MP JPEG drafted to 1/2, to EfficientNet's input
        ((1500, 2000), (384, 384), None),
        ((2000, 1500), (224, 224), (250.0, 0.0, 1750.0, 1500.0)),  # CLIP's centre crop of a landscape photo
        ((1224, 1632), (224, 224), (0.0, 204.0, 1224.0, 1428.0)),  # and of a portrait one
        ((1013, 673), (256, 256), (101.3, 33.65, 942.09, 605.7)),
        ((780, 1063), (384, 384), None),
        ((640, 480), (300, 200), None),
    ],
)
@pytest.mark.parametrize("resample", [Image.Resampling.BICUBIC, Image.Resampling.BILINEAR])
def test_banded_resize_gives_the_pixels_of_pillows_single_call(source, size, box, resample):
    image = detailed_image(*source)
    assert np.array_equal(
        pixels(banded.resize(image, size, resample, box=box, reducing_gap=3.0)),
        pixels(image.resize(size, resample, box=box, reducing_gap=3.0)),
    )


@pytest.mark.parametrize(
    "image, size, resample",
    [
        (detailed_image(4000, 3000), (384, 384), Image.Resampling.BICUBIC),  # Pillow box-reduces first
        (detailed_image(600, 500, "RGBA"), (224, 224), Image.Resampling.BICUBIC),  # premultiplied alpha
        (detailed_image(600, 500), (224, 224), Image.Resampling.LANCZOS),  # a filter not banded
        (detailed_image(200, 100), (64, 64), Image.Resampling.BICUBIC),  # too few rows to split
    ],
)
def test_what_is_not_banded_is_pillows_own_call(image, size, resample):
    assert np.array_equal(
        pixels(banded.resize(image, size, resample, reducing_gap=3.0)),
        pixels(image.resize(size, resample, reducing_gap=3.0)),
    )


def test_a_band_no_thread_is_free_for_is_done_by_the_caller_without_waiting():
    image = detailed_image(2000, 1500)
    release = threading.Event()
    busy = banded._band_threads.get().submit(release.wait, 30)  # the band thread is taken
    try:
        result = banded.resize(image, (384, 384), Image.Resampling.BICUBIC)
        assert not busy.done()  # finished without the band thread
        assert np.array_equal(pixels(result), pixels(image.resize((384, 384), Image.Resampling.BICUBIC)))
    finally:
        release.set()
        busy.result()


def test_the_second_band_runs_on_the_band_thread_when_it_is_free(monkeypatch):
    threads = set()
    pillows_resize = Image.Image.resize

    def recording_resize(self, *args, **kwargs):
        threads.add(threading.current_thread().name)
        return pillows_resize(self, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "resize", recording_resize)
    image = detailed_image(4000, 1500)
    for _ in range(5):  # the band thread is idle; a loaded machine may still start it late
        banded.resize(image, (384, 384), Image.Resampling.BICUBIC)
        if any(name.startswith("resize-band") for name in threads):
            break
    assert threading.current_thread().name in threads
    assert any(name.startswith("resize-band") for name in threads)
