"""Reading and replacing stored files on whichever media storage is configured (geolocator/media_storage.py).

Every file goes through Django's storage API (never ``.path()``), so the same
code runs on the data dir and on a bucket (``s3_storage.py``).
"""

from __future__ import annotations

from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage, Storage, default_storage

CHUNK_BYTES = 256 * 1024


def is_local(storage: Storage = default_storage) -> bool:
    """Whether the files are on this machine's disk (the data dir), not in a store that every host shares."""
    return isinstance(storage, FileSystemStorage)


def read_bytes(name: str, storage: Storage = default_storage) -> bytes:
    with storage.open(name, "rb") as handle:
        return handle.read()


def replace(name: str, data: bytes, storage: Storage = default_storage) -> None:
    """Store ``data`` under exactly ``name``, replacing what was there (storages rename a clash on save).

    A reader in between finds no file and takes it as not there yet.
    """
    storage.delete(name)
    saved = storage.save(name, ContentFile(data))
    if saved != name:  # another writer saved it in between: theirs has the same role, keep one
        storage.delete(saved)
