"""Small JPEG previews of reference photos, generated once and kept in the media storage.

A thumbnail's name is derived from its photo's file name
(``thumbnails/<size>/<image name>.jpg``), so the media view can tell whose
preview a request asks for, and apply that photo's access rule, from the
name alone (:func:`image_name_of`).
"""

import io
import logging

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from PIL import Image

from similarity.gallery.images import ImageRejected, open_image

logger = logging.getLogger(__name__)

SIZES = {"small": 160, "medium": 480}
PREFIX = "thumbnails/"


def _thumbnail_name(image_name: str, size: str) -> str:
    return f"{PREFIX}{size}/{image_name}.jpg"


def image_name_of(name: str) -> str | None:
    """The photo file a thumbnail name belongs to; None if ``name`` is no thumbnail."""
    if not name.startswith(PREFIX) or not name.endswith(".jpg"):
        return None
    size, _, image_name = name[len(PREFIX) : -len(".jpg")].partition("/")
    return image_name if size in SIZES and image_name else None


def thumbnail_name(image_name: str, size: str = "small") -> str | None:
    """Storage name of the cached thumbnail, generating it on first use (None if unreadable)."""
    if size not in SIZES:
        raise ValueError(f"unknown thumbnail size {size!r}; use one of {sorted(SIZES)}")
    name = _thumbnail_name(image_name, size)
    if default_storage.exists(name):
        return name
    try:
        with default_storage.open(image_name, "rb") as handle:
            image = open_image(handle, draft_size=SIZES[size])
    except (ImageRejected, OSError) as exc:
        logger.warning("No thumbnail for %s: %s", image_name, exc)
        return None
    return _write(image, name, size)


def save_thumbnail_from(image_name: str, image: Image.Image, size: str = "small") -> None:
    """Cache a thumbnail from an already decoded (upright RGB) image, if it is big enough.

    A thumbnail is a convenience: when it cannot be written (a read-only or
    full storage), that is logged, and whoever called carries on.
    """
    name = _thumbnail_name(image_name, size)
    if min(image.size) < SIZES[size] or default_storage.exists(name):
        return
    try:
        _write(image.copy(), name, size)
    except OSError as exc:
        logger.warning("Could not write the thumbnail of %s: %s", image_name, exc)


def _write(image: Image.Image, name: str, size: str) -> str:
    image.thumbnail((SIZES[size], SIZES[size]), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=85)
    saved = default_storage.save(name, ContentFile(buffer.getvalue()))
    if saved != name:  # another process wrote it meanwhile: keep theirs
        default_storage.delete(saved)
    return name


def thumbnail_url(image_name: str, size: str = "small") -> str | None:
    name = thumbnail_name(image_name, size)
    return default_storage.url(name) if name else None


def delete_thumbnails(image_name: str) -> None:
    for size in SIZES:
        default_storage.delete(_thumbnail_name(image_name, size))
