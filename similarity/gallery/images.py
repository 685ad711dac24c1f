"""Reading photos: format and size checks, EXIF orientation, RGB conversion, GPS EXIF.

Everything that turns bytes from a curator or a stranger into a PIL image goes
through here, so every caller gets the same checks and the same clear errors.
"""

import logging
import math
import warnings
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout
from dataclasses import dataclass

import pillow_heif
from django.conf import settings
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from similarity.threads import LazyThreadPool
from similarity.timing import stage

logger = logging.getLogger(__name__)

pillow_heif.register_heif_opener()  # phones shoot HEIC


def format_size(size: int) -> str:
    """Bytes in binary units, as the limits are set: 20971520 -> '20 MiB'."""
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= factor:
            return f"{size / factor:.1f}".removesuffix(".0") + f" {unit}"
    return f"{size} bytes"


# The one list of what the service takes: Pillow's format name -> the file extensions it comes with.
ACCEPTED = {
    "JPEG": (".jpg", ".jpeg"),
    "MPO": (),  # phones' multi-picture JPEGs: the first picture
    "PNG": (".png",),
    "WEBP": (".webp",),
    "GIF": (".gif",),
    "HEIF": (".heic", ".heif"),
}
ACCEPTED_FORMATS = set(ACCEPTED)
ACCEPTED_EXTENSIONS = tuple(sorted(extension for extensions in ACCEPTED.values() for extension in extensions))
ACCEPTED_NAMES = "JPEG, PNG, WebP, GIF (first frame) or HEIC/HEIF"
# For file pickers (<input accept>): browsers do not count HEIC as image/* everywhere.
ACCEPT_ATTRIBUTE = ",".join(["image/*", *ACCEPTED_EXTENSIONS])


class ImageRejected(ValueError):
    """The bytes are not an image this service accepts; the message says why."""


def open_image(
    source, *, max_pixels: int | None = None, draft_size: int | None = None, lookup: bool = False
) -> Image.Image:
    """Open, check and fully decode an image, returning it upright in RGB.

    ``source`` is a path or a binary file object. ``draft_size`` is the
    smallest side the caller needs: a JPEG decodes at reduced scale (the
    decoder shrinks it by a power of two, never below that size), any other
    format is box-reduced by a whole factor right after decoding, before it
    is turned upright and converted, so those steps work on the small image.
    ``max_pixels`` (default SIMILARITY_MAX_IMAGE_PIXELS) bounds the size the
    header claims; a ``lookup`` (a stranger's photo) may also decode to at most
    SIMILARITY_MAX_LOOKUP_PIXELS, which bounds a request's memory whatever the
    file claims. Large decodes (:func:`is_large`) run on
    SIMILARITY_MAX_PARALLEL_LARGE_DECODES threads per process, so however many
    arrive at once, few full-size buffers exist.
    """
    with stage("decode"):
        limits = _Limits(
            header=max_pixels or settings.SIMILARITY_MAX_IMAGE_PIXELS,
            decoded=settings.SIMILARITY_MAX_LOOKUP_PIXELS if lookup else None,
        )
        return _open_image(source, limits, draft_size)


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


class DecoderBusy(RuntimeError):
    """The large-decode thread stayed busy too long; the client may try again."""


LARGE_DECODE_WAIT_SECONDS = 60
JPEG_FORMATS = {"JPEG", "MPO"}


@dataclass(frozen=True)
class _Limits:
    header: int
    decoded: int | None


_large_decoder = LazyThreadPool("large-decode", lambda: settings.SIMILARITY_MAX_PARALLEL_LARGE_DECODES)


def _large_decode_pool() -> ThreadPoolExecutor:
    """SIMILARITY_MAX_PARALLEL_LARGE_DECODES threads that decode every large image of this process.

    They keep the default priority: a low-priority thread that holds the GIL
    when the OS sets it aside stalls every request thread of the process
    (measured with bench/hostile.py: real lookups' p95 rose under attack).
    What keeps large decodes from crowding out ordinary lookups is the
    per-client throttle on them (api/throttles.py).
    """
    return _large_decoder.get()


def is_large(claimed: int, decoded: int) -> bool:
    """Whether a decode is large: by the memory it takes (the pixels decoded) or by its work (a JPEG
    decodes at reduced scale, but its whole file is entropy-decoded all the same)."""
    return decoded > settings.SIMILARITY_LARGE_DECODE_PIXELS or claimed > settings.SIMILARITY_MAX_LOOKUP_PIXELS


def is_large_upload(source, draft_size: int | None) -> bool:
    """Whether decoding ``source`` would be large, from its header alone (False when it is no image at all)."""
    if hasattr(source, "seek"):
        source.seek(0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(source) as image:
                claimed = image.size[0] * image.size[1]
                if draft_size and image.format in JPEG_FORMATS:
                    image.draft("RGB", (draft_size, draft_size))
                return is_large(claimed, image.size[0] * image.size[1])
    except Exception:  # noqa: BLE001 -- not an image: decoding it will say so
        return False
    finally:
        if hasattr(source, "seek"):
            source.seek(0)


def _load(image: Image.Image, draft_size: int | None) -> tuple[Image.Image, Image.Exif]:
    """Decode the pixels, then shrink at once: the full-size buffer lives only until then.

    EXIF is read after decoding: a PNG's may follow its pixel data, and asking
    for it first would decode the whole image on the caller's thread.
    """
    image.load()
    exif = image.getexif()
    return shrink(image, draft_size), exif


def _check_header(image: Image.Image, max_pixels: int) -> None:
    """What the header says: a format the service takes, and not too many pixels."""
    if image.format not in ACCEPTED_FORMATS:
        raise ImageRejected(f"Unsupported image format {image.format or 'unknown'}; accepted: {ACCEPTED_NAMES}.")
    width, height = image.size
    if width < 1 or height < 1:
        raise ImageRejected("The image has no pixels.")
    if width * height > max_pixels:
        raise ImageRejected(f"The image is {width}x{height} pixels; at most {max_pixels:,} pixels are accepted.")


def check_header(source) -> None:
    """Refuse (ImageRejected) what is not an image this service takes, from its header alone: nothing is
    decoded (a batch's photos are decoded later, one at a time, by the task that locates them)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as image:
                _check_header(image, settings.SIMILARITY_MAX_IMAGE_PIXELS)
    except ImageRejected:
        raise
    except UnidentifiedImageError:
        raise ImageRejected(f"The file is not an image (or not one of {ACCEPTED_NAMES}).") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageRejected("The image has too many pixels.") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageRejected(f"The image header could not be read ({exc}).") from None


def _open_image(source, limits: _Limits, draft_size: int | None) -> Image.Image:
    if hasattr(source, "seek"):
        source.seek(0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image: Image.Image = Image.open(source)
            _check_header(image, limits.header)
            width, height = image.size
            if draft_size and image.format in JPEG_FORMATS:
                image.draft("RGB", (draft_size, draft_size))
            decoded = image.size[0] * image.size[1]  # what the decoder will produce (after a JPEG draft)
            if limits.decoded is not None and decoded > limits.decoded:
                raise ImageRejected(
                    f"The image is {width}x{height} pixels; a lookup decodes at most {limits.decoded:,} pixels "
                    f"of {ACCEPTED_NAMES.replace('JPEG, ', '')} (JPEG photos up to {limits.header:,}). "
                    "Send a smaller copy."
                )
            if not is_large(width * height, decoded):
                image, exif = _load(image, draft_size)
            else:
                try:
                    image, exif = (
                        _large_decode_pool().submit(_load, image, draft_size).result(LARGE_DECODE_WAIT_SECONDS)
                    )
                except FuturesTimeout:
                    raise DecoderBusy(
                        "The server is busy decoding other large images; try again in a moment."
                    ) from None
    except (ImageRejected, DecoderBusy):
        raise
    except UnidentifiedImageError:
        raise ImageRejected(f"The file is not an image (or not one of {ACCEPTED_NAMES}).") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageRejected("The image has too many pixels.") from None
    except (OSError, SyntaxError, ValueError, EOFError, RuntimeError, MemoryError) as exc:
        raise ImageRejected(f"The image could not be decoded ({exc}); it may be truncated or corrupt.") from None
    return to_rgb(upright(image, exif))


REDUCIBLE_MODES = {"L", "LA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "I", "F"}


def shrink(image: Image.Image, min_side: int | None) -> Image.Image:
    """Box-reduce by the largest whole factor that keeps both sides >= ``min_side`` (what a JPEG draft does)."""
    if not min_side:
        return image
    factor = min(image.width // min_side, image.height // min_side)
    if factor < 2:
        return image
    if image.mode not in REDUCIBLE_MODES:  # palette, 16-bit and 1-bit images reduce once made plain
        image = to_rgb(image)
    return image.reduce(factor)


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
    """RGB with transparency composited on white; 16-bit and CMYK converted sensibly; one full-size copy at most."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        image = image.point(lambda value: value / 256).convert("L")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        if image.mode == "RGB":
            return image
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image if image.mode == "RGBA" else image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba)  # an RGBA mask pastes through its alpha band
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
