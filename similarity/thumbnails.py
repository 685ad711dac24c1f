"""Small JPEG previews of reference photos, generated once and cached on disk."""

import hashlib
import logging
import os
from pathlib import Path

from django.conf import settings
from django.core.files.storage import default_storage
from PIL import Image

from similarity.images import ImageRejected, open_image

logger = logging.getLogger(__name__)

SIZES = {"small": 160, "medium": 480}


def _thumbnail_name(image_name: str, size: str) -> str:
    key = hashlib.sha1(image_name.encode()).hexdigest()
    return f"thumbnails/{size}/{key[:2]}/{key}.jpg"


def thumbnail_name(image_name: str, size: str = "small") -> str | None:
    """Storage name of the cached thumbnail, generating it on first use (None if unreadable)."""
    if size not in SIZES:
        raise ValueError(f"unknown thumbnail size {size!r}; use one of {sorted(SIZES)}")
    name = _thumbnail_name(image_name, size)
    target = Path(settings.MEDIA_ROOT) / name
    if target.exists():
        return name
    try:
        with default_storage.open(image_name, "rb") as handle:
            image = open_image(handle, draft_size=SIZES[size])
    except (ImageRejected, OSError) as exc:
        logger.warning("No thumbnail for %s: %s", image_name, exc)
        return None
    _write(image, target, size)
    return name


def save_thumbnail_from(image_name: str, image: Image.Image, size: str = "small") -> None:
    """Cache a thumbnail from an already decoded (upright RGB) image, if it is big enough."""
    target = Path(settings.MEDIA_ROOT) / _thumbnail_name(image_name, size)
    if not target.exists() and min(image.size) >= SIZES[size]:
        _write(image.copy(), target, size)


def _write(image: Image.Image, target: Path, size: str) -> None:
    image.thumbnail((SIZES[size], SIZES[size]), Image.Resampling.LANCZOS)
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    image.save(temp, "JPEG", quality=85)
    temp.replace(target)


def thumbnail_url(image_name: str, size: str = "small") -> str | None:
    name = thumbnail_name(image_name, size)
    return default_storage.url(name) if name else None


def delete_thumbnails(image_name: str) -> None:
    for size in SIZES:
        path = Path(settings.MEDIA_ROOT) / _thumbnail_name(image_name, size)
        path.unlink(missing_ok=True)
