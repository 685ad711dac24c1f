"""The S3-compatible media storage (AWS S3, SeaweedFS, MinIO, Ceph), chosen by GEOLOCATOR_MEDIA_STORAGE.

django-storages' backend, with one difference: an object's URL is the app's own
``/media/<name>``, so a client never gets a bucket address that skips the
access rules. The media view checks them, then streams the object
(:meth:`S3MediaStorage.stream`) or, with GEOLOCATOR_MEDIA_REDIRECT, redirects
to a short-lived presigned URL (:meth:`S3MediaStorage.presigned_url`).
"""

from __future__ import annotations

import mimetypes
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote

from botocore.exceptions import ClientError
from django.conf import settings
from storages.backends.s3 import S3Storage
from storages.utils import clean_name

from similarity.media import CHUNK_BYTES

MISSING_CODES = {"404", "NoSuchKey", "NotFound"}


@dataclass
class StoredObject:
    """A stored file being read: its size, type and modification time, and its bytes in chunks."""

    size: int
    content_type: str
    modified: datetime | None
    chunks: Iterator[bytes]


class S3MediaStorage(S3Storage):
    """django-storages' S3 backend whose URLs stay on the app (``/media/...``), which checks access first."""

    def url(self, name, parameters=None, expire=None, http_method=None):
        return settings.MEDIA_URL + quote(clean_name(name))

    def presigned_url(self, name: str) -> str:
        """A GET URL of the object itself, valid for GEOLOCATOR_MEDIA_URL_SECONDS."""
        return super().url(name)

    def stream(self, name: str) -> StoredObject:
        """One GET for the metadata and the body; FileNotFoundError when there is no such object."""
        try:
            answer = self.bucket.Object(self._normalize_name(clean_name(name))).get()
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) in MISSING_CODES:
                raise FileNotFoundError(name) from None
            raise
        content_type = answer.get("ContentType") or ""
        if not content_type or content_type == "binary/octet-stream":
            content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        return StoredObject(
            answer["ContentLength"], content_type, answer.get("LastModified"), answer["Body"].iter_chunks(CHUNK_BYTES)
        )
