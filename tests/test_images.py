import io

import pytest
from PIL import ExifTags, Image
from PIL.TiffImagePlugin import IFDRational

from similarity.gallery.images import ImageRejected, open_image, read_gps
from tests.conftest import gps_exif, make_image_bytes


def test_gps_exif_gives_signed_decimal_degrees():
    data = make_image_bytes(exif=gps_exif(-33.865, 151.21))
    position = read_gps(io.BytesIO(data))
    assert position.latitude == pytest.approx(-33.865, abs=1e-6)
    assert position.longitude == pytest.approx(151.21, abs=1e-6)


def test_a_photo_without_gps_exif_has_no_position():
    assert read_gps(io.BytesIO(make_image_bytes())) is None


def broken_gps(overrides: dict) -> bytes:
    gps = {
        ExifTags.GPS.GPSLatitudeRef: "N",
        ExifTags.GPS.GPSLatitude: (10.0, 0.0, 0.0),
        ExifTags.GPS.GPSLongitudeRef: "E",
        ExifTags.GPS.GPSLongitude: (20.0, 0.0, 0.0),
    }
    gps.update(overrides)
    exif = Image.Exif()
    exif[ExifTags.Base.GPSInfo] = gps
    return make_image_bytes(exif=exif)


@pytest.mark.parametrize(
    "overrides",
    [
        {ExifTags.GPS.GPSLatitude: (IFDRational(10, 0), 0.0, 0.0)},  # zero denominator
        {ExifTags.GPS.GPSLatitude: (IFDRational(0, 0), 0.0, 0.0)},  # 0/0 reads as NaN
        {ExifTags.GPS.GPSLatitude: (95.0, 0.0, 0.0)},  # out of range
        {ExifTags.GPS.GPSLongitude: (200.0, 0.0, 0.0)},
        {ExifTags.GPS.GPSLatitude: (1.0, 2.0, 3.0, 4.0, 5.0)},  # wrong shape
    ],
)
def test_broken_gps_exif_is_ignored_with_a_warning(overrides, caplog):
    assert read_gps(io.BytesIO(broken_gps(overrides))) is None
    assert any("GPS" in record.getMessage() for record in caplog.records)


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (40, 20), "blue")
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6  # rotate 90 degrees clockwise to display
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", exif=exif)
    assert open_image(buffer).size == (20, 40)


def test_transparent_palette_png_becomes_rgb():
    image = Image.new("P", (10, 10))
    image.info["transparency"] = 0
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    assert open_image(buffer).mode == "RGB"


def test_sixteen_bit_png_becomes_rgb():
    buffer = io.BytesIO()
    Image.new("I;16", (10, 10), 40000).save(buffer, "PNG")
    decoded = open_image(buffer)
    assert decoded.mode == "RGB"
    assert decoded.getpixel((0, 0))[0] == 40000 // 256


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "not an image"),
        (b"\x00\x01garbage" * 100, "not an image"),
        (make_image_bytes()[:400], "truncated or corrupt"),
    ],
)
def test_bad_bytes_are_rejected_with_a_reason(data, message):
    with pytest.raises(ImageRejected, match=message):
        open_image(io.BytesIO(data))


def test_too_many_pixels_are_refused_before_decoding():
    with pytest.raises(ImageRejected, match="pixels"):
        open_image(io.BytesIO(make_image_bytes(size=(400, 300))), max_pixels=100_000)


def test_draft_decoding_never_goes_below_the_requested_size():
    decoded = open_image(io.BytesIO(make_image_bytes(size=(2000, 1500))), draft_size=256)
    assert min(decoded.size) >= 256
    assert decoded.size[0] < 2000
