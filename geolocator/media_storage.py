"""Where media files live (photos, thumbnails, local features, batch uploads, the shared index), from the
environment: the data dir by default, or an S3-compatible bucket for several machines.

``GEOLOCATOR_MEDIA_STORAGE=s3://bucket/prefix`` plus ``GEOLOCATOR_S3_ENDPOINT_URL`` (SeaweedFS, MinIO, Ceph;
unset for AWS), ``GEOLOCATOR_S3_REGION`` and the keys (``GEOLOCATOR_S3_ACCESS_KEY`` /
``GEOLOCATOR_S3_SECRET_KEY``, else boto3's own chain: ``AWS_*`` variables, profiles, instance roles).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured

from geolocator.env import env_int, env_str, raw

STATIC_FILES = {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}


def media_storages() -> tuple[dict, bool]:
    """Django's STORAGES, and whether media are in an S3-compatible bucket."""
    location = raw("GEOLOCATOR_MEDIA_STORAGE")
    if location is None or location == "local":
        local = {"BACKEND": "django.core.files.storage.FileSystemStorage"}  # in MEDIA_ROOT, as it is when used
        return {"default": local, "staticfiles": STATIC_FILES}, False
    parts = urlsplit(location)
    if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
        raise ImproperlyConfigured(
            f"GEOLOCATOR_MEDIA_STORAGE={location!r}: expected local or s3://bucket/prefix (the prefix may be empty)."
        )
    options = {
        "bucket_name": parts.netloc,
        "location": parts.path.strip("/"),
        "endpoint_url": raw("GEOLOCATOR_S3_ENDPOINT_URL"),
        "region_name": env_str("GEOLOCATOR_S3_REGION", "us-east-1"),
        "access_key": raw("GEOLOCATOR_S3_ACCESS_KEY"),
        "secret_key": raw("GEOLOCATOR_S3_SECRET_KEY"),
        "addressing_style": "path" if raw("GEOLOCATOR_S3_ENDPOINT_URL") else None,  # self-hosted stores
        "signature_version": "s3v4",
        "file_overwrite": False,  # two uploads of IMG_0001.jpg keep both, as on a disk
        "default_acl": None,  # private objects: /media/ applies the access rules
        "querystring_expire": env_int("GEOLOCATOR_MEDIA_URL_SECONDS", 300, minimum=10, maximum=7 * 24 * 3600),
    }
    backend = {"BACKEND": "similarity.s3_storage.S3MediaStorage", "OPTIONS": options}
    return {"default": backend, "staticfiles": STATIC_FILES}, True
