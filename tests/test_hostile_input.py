"""Every broken, odd or hostile upload gets a 400 with a reason or a correct answer, never a 500."""

import io
import random
import struct
import zlib

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from PIL import ExifTags, Image
from PIL.TiffImagePlugin import IFDRational
from rest_framework.test import APIClient

from tests.conftest import make_image_bytes, upload

ENDPOINTS = ["/api/similar/", "/api/locate/"]


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def png_header_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims a huge size, with almost no pixel data behind it."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def exif_with_gps(gps: dict) -> Image.Exif:
    exif = Image.Exif()
    exif[ExifTags.Base.GPSInfo] = gps
    return exif


def animated_gif() -> bytes:
    frames = [Image.new("P", (64, 48), colour) for colour in (1, 50, 200)]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def palette_with_transparency() -> bytes:
    image = Image.new("P", (80, 60), 3)
    image.info["transparency"] = 3
    return encode(image, "PNG", transparency=3)


def heic() -> bytes:
    import pillow_heif  # noqa: F401  (registers the HEIF encoder)

    return encode(Image.open(io.BytesIO(make_image_bytes(4))).convert("RGB"), "HEIF")


def huge_exif() -> bytes:
    exif = Image.Exif()
    exif[ExifTags.Base.ImageDescription] = "x" * 60_000
    return make_image_bytes(5, exif=exif)


GOOD = {
    "1x1 pixel": lambda: encode(Image.new("RGB", (1, 1), "red"), "PNG"),
    "CMYK JPEG": lambda: encode(Image.new("CMYK", (120, 90), (10, 200, 30, 5)), "JPEG"),
    "16-bit PNG": lambda: encode(Image.new("I;16", (100, 80), 50_000), "PNG"),
    "palette PNG with transparency": palette_with_transparency,
    "animated GIF": animated_gif,
    "HEIC": heic,
    "PNG named .jpg": lambda: make_image_bytes(6, fmt="PNG"),
    "WebP": lambda: make_image_bytes(7, fmt="WEBP"),
    "huge EXIF block": huge_exif,
    "GPS with a zero denominator": lambda: make_image_bytes(
        8,
        exif=exif_with_gps(
            {
                ExifTags.GPS.GPSLatitudeRef: "N",
                ExifTags.GPS.GPSLatitude: (IFDRational(1, 0), 0.0, 0.0),
                ExifTags.GPS.GPSLongitudeRef: "E",
                ExifTags.GPS.GPSLongitude: (1.0, 0.0, 0.0),
            }
        ),
    ),
    "GPS 0/0 (NaN)": lambda: make_image_bytes(
        9,
        exif=exif_with_gps(
            {ExifTags.GPS.GPSLatitude: (IFDRational(0, 0), 0.0, 0.0), ExifTags.GPS.GPSLongitude: (1.0, 0.0, 0.0)}
        ),
    ),
    "GPS out of range": lambda: make_image_bytes(
        10,
        exif=exif_with_gps({ExifTags.GPS.GPSLatitude: (123.0, 0.0, 0.0), ExifTags.GPS.GPSLongitude: (500.0, 0.0, 0.0)}),
    ),
    "GPS of the wrong shape": lambda: make_image_bytes(
        11, exif=exif_with_gps({ExifTags.GPS.GPSLatitude: (1.0, 2.0, 3.0, 4.0, 5.0), ExifTags.GPS.GPSLongitude: (1.0,)})
    ),
    "GPS with text for a reference": lambda: make_image_bytes(
        12,
        exif=exif_with_gps(
            {
                ExifTags.GPS.GPSLatitudeRef: "sideways",
                ExifTags.GPS.GPSLatitude: (10.0, 0.0, 0.0),
                ExifTags.GPS.GPSLongitudeRef: "\x00",
                ExifTags.GPS.GPSLongitude: (10.0, 0.0, 0.0),
            }
        ),
    ),
}

BAD = {
    "zero bytes": (lambda: b"", "empty"),
    "random bytes": (lambda: random.Random(1).randbytes(5000), "not an image"),
    "truncated JPEG": (lambda: make_image_bytes(13)[:700], "truncated"),
    "header claiming 30000x30000": (lambda: png_header_claiming(30_000, 30_000), "pixels"),
    "a PDF": (lambda: b"%PDF-1.7\n" + b"0" * 2000, "not an image"),
}


@pytest.fixture
def client(db):
    return APIClient()


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("name", list(GOOD))
def test_odd_but_valid_images_get_an_answer(client, sample_gallery, endpoint, name):
    response = client.post(endpoint, {"image": upload(GOOD[name](), "odd.jpg")}, format="multipart")
    assert response.status_code == 200, (name, response.content[:300])


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("name", list(BAD))
def test_broken_files_get_a_400_naming_the_problem(client, endpoint, name):
    make, words = BAD[name]
    response = client.post(endpoint, {"image": upload(make(), "broken.jpg")}, format="multipart")
    assert response.status_code == 400, (name, response.content[:300])
    body = response.json()
    assert body["success"] is False and words in body["error"] and "image" in body["error"]


def test_broken_gps_exif_leaves_the_exif_source_without_an_answer(client, sample_gallery):
    data = GOOD["GPS with a zero denominator"]()
    body = client.post("/api/locate/", {"image": upload(data)}, format="multipart").json()
    exif = next(source for source in body["sources"] if source["name"] == "exif_gps")
    assert exif["status"] == "no_result"


SEEDS = [make_image_bytes(20), make_image_bytes(21, fmt="PNG"), make_image_bytes(22, fmt="GIF")]


@st.composite
def mutated_images(draw):
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 8))):
        action = draw(st.sampled_from(["flip", "truncate", "insert", "delete"]))
        position = draw(st.integers(0, len(data) - 1))
        if action == "flip":
            data[position] ^= draw(st.integers(1, 255))
        elif action == "truncate":
            del data[max(1, position) :]
        elif action == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=64))
        else:
            del data[position : position + draw(st.integers(1, 64))]
        if not data:
            data = bytearray(b"\x00")
    return bytes(data)


@pytest.mark.slow
@hypothesis_settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(st.binary(max_size=4096), mutated_images()), endpoint=st.sampled_from(ENDPOINTS))
def test_random_and_mutated_uploads_never_cause_a_500(client, data, endpoint):
    response = client.post(endpoint, {"image": upload(data, "fuzz.jpg")}, format="multipart")
    assert response.status_code in (200, 400), response.content[:300]
    if response.status_code == 400:
        assert response.json()["success"] is False and response.json()["error"]
