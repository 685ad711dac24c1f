"""Reading photos: format and size checks, EXIF orientation, RGB conversion, GPS EXIF.

Everything that turns bytes from a curator or a stranger into a PIL image goes
through here, so every caller gets the same checks and the same clear errors.
"""

import logging
import math
import warnings
from dataclasses import dataclass

import pillow_heif
from django.conf import settings
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from similarity.timing import stage

logger = logging.getLogger(__name__)

pillow_heif.register_heif_opener()  # phones shoot HEIC

ACCEPTED_FORMATS = {"JPEG", "PNG", "WEBP", "GIF", "MPO", "HEIF"}
ACCEPTED_NAMES = "JPEG, PNG, WebP, GIF (first frame) or HEIC/HEIF"


class ImageRejected(ValueError):
    """The bytes are not an image this service accepts; the message says why."""


def open_image(source, *, max_pixels: int | None = None, draft_size: int | None = None) -> Image.Image:
    """Open, check and fully decode an image, returning it upright in RGB.

    ``source`` is a path or a binary file object. ``draft_size`` lets the JPEG
    decoder scale down by a power of two while decoding (never below that size),
    which is much faster for phone photos that will be shrunk anyway.
    ``max_pixels`` defaults to SIMILARITY_MAX_IMAGE_PIXELS, so every caller
    (API, admin, import, embedding) applies the same decompression-bomb guard.
    """
    with stage("decode"):
        return _open_image(source, max_pixels or settings.SIMILARITY_MAX_IMAGE_PIXELS, draft_size)


VERIFY_DRAFT_SIZE = 64  # JPEGs decode at 1/8 scale for a mere check


def verify_image(source) -> None:
    """Refuse (ImageRejected) what is not an image this service accepts, decoding as little as it can.

    The same checks as :func:`open_image`, at the JPEG decoder's smallest
    draft; a file object is left rewound for whoever stores it next.
    """
    try:
        open_image(source, draft_size=VERIFY_DRAFT_SIZE)
    finally:
        if hasattr(source, "seek"):
            source.seek(0)


def _open_image(source, max_pixels: int, draft_size: int | None) -> Image.Image:
    if hasattr(source, "seek"):
        source.seek(0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(source)
            if image.format not in ACCEPTED_FORMATS:
                raise ImageRejected(f"Unsupported image format {image.format or 'unknown'}; accepted: {ACCEPTED_NAMES}.")
            width, height = image.size
            if width < 1 or height < 1:
                raise ImageRejected("The image has no pixels.")
            if width * height > max_pixels:
                raise ImageRejected(
                    f"The image is {width}x{height} pixels; at most {max_pixels:,} pixels are accepted."
                )
            exif = image.getexif()
            if draft_size and image.format in {"JPEG", "MPO"}:
                image.draft("RGB", (draft_size, draft_size))
            image.load()
    except ImageRejected:
        raise
    except UnidentifiedImageError:
        raise ImageRejected(f"The file is not an image (or not one of {ACCEPTED_NAMES}).") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageRejected("The image has too many pixels.") from None
    except (OSError, SyntaxError, ValueError, EOFError, RuntimeError, MemoryError) as exc:
        raise ImageRejected(f"The image could not be decoded ({exc}); it may be truncated or corrupt.") from None
    return to_rgb(upright(image, exif))


def upright(image: Image.Image, exif=None) -> Image.Image:
    """Rotate/flip according to the EXIF orientation tag, tolerating broken tags."""
    exif = exif if exif is not None else image.getexif()
    orientation = exif.get(ExifTags.Base.Orientation, 1) if exif else 1
    if orientation in (None, 1):
        return image
    try:
        return ImageOps.exif_transpose(image)
    except Exception as exc:  # a broken orientation tag must not lose the photo
        logger.warning("Ignoring unusable EXIF orientation %r: %s", orientation, exc)
        return image


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB with transparency composited on white; 16-bit and CMYK converted sensibly."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        image = image.point(lambda value: value / 256).convert("L")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image.convert("RGBA"), mask=image.convert("RGBA").getchannel("A"))
        return background
    return image.convert("RGB")


@dataclass(frozen=True)
class GpsPosition:
    latitude: float
    longitude: float


def _rational_to_float(value) -> float:
    if isinstance(value, tuple) and len(value) == 2:
        numerator, denominator = value
        return float(numerator) / float(denominator)
    return float(value)


def _dms_to_degrees(dms) -> float:
    if not isinstance(dms, (tuple, list)) or not 1 <= len(dms) <= 3:
        raise ValueError(f"expected degrees/minutes/seconds, got {dms!r}")
    parts = [_rational_to_float(part) for part in dms] + [0.0, 0.0]
    degrees, minutes, seconds = parts[:3]
    return degrees + minutes / 60.0 + seconds / 3600.0


def gps_from_exif(image: Image.Image) -> GpsPosition | None:
    """The position in the photo's GPS EXIF, or None when absent or unusable (logged)."""
    try:
        gps = image.getexif().get_ifd(ExifTags.IFD.GPSInfo)
    except Exception as exc:
        logger.warning("Ignoring unreadable EXIF block: %s", exc)
        return None
    if not gps:
        return None
    try:
        latitude = _dms_to_degrees(gps[ExifTags.GPS.GPSLatitude])
        longitude = _dms_to_degrees(gps[ExifTags.GPS.GPSLongitude])
        lat_ref = str(gps.get(ExifTags.GPS.GPSLatitudeRef, "N")).strip().upper()[:1]
        lon_ref = str(gps.get(ExifTags.GPS.GPSLongitudeRef, "E")).strip().upper()[:1]
    except KeyError:
        return None
    except (TypeError, ValueError, ZeroDivisionError, OverflowError) as exc:
        logger.warning("Ignoring broken GPS EXIF: %s", exc)
        return None
    if lat_ref == "S":
        latitude = -latitude
    if lon_ref == "W":
        longitude = -longitude
    if not (math.isfinite(latitude) and math.isfinite(longitude)):
        logger.warning("Ignoring non-finite GPS EXIF position")
        return None
    if not (-90 <= latitude <= 90 and -180 <= longitude <= 180):
        logger.warning("Ignoring out-of-range GPS EXIF position %s, %s", latitude, longitude)
        return None
    return GpsPosition(latitude, longitude)


def read_gps(source) -> GpsPosition | None:
    """GPS position of an image file without decoding its pixels."""
    if hasattr(source, "seek"):
        source.seek(0)
    try:
        with Image.open(source) as image:
            return gps_from_exif(image)
    except (OSError, SyntaxError, ValueError, UnidentifiedImageError) as exc:
        logger.warning("Could not read EXIF: %s", exc)
        return None
    finally:
        if hasattr(source, "seek"):
            source.seek(0)
