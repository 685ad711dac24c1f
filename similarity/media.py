"""Stored files on whichever media storage is configured (geolocator/media_storage.py): reading and replacing
one, copying a local media folder into the storage (moving to a bucket), and checking that every file the
database names is there.

Every file goes through Django's storage API (never ``.path()``), so the same
code runs on the data dir and on a bucket (``s3_storage.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from django.core.files import File
from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage, Storage, default_storage

CHUNK_BYTES = 256 * 1024
COPY_THREADS = 8  # copies wait on the network, not the CPU


def is_local(storage: Storage = default_storage) -> bool:
    """Whether the files are on this machine's disk (the data dir), not in a store that every host shares."""
    return isinstance(storage, FileSystemStorage)


def read_bytes(name: str, storage: Storage = default_storage) -> bytes:
    with storage.open(name, "rb") as handle:
        return handle.read()


def replace(name: str, data: bytes | File, storage: Storage = default_storage) -> None:
    """Store ``data`` under exactly ``name``, replacing what was there (storages rename a clash on save).

    A reader in between finds no file and takes it as not there yet.
    """
    storage.delete(name)
    saved = storage.save(name, ContentFile(data) if isinstance(data, bytes) else data)
    if saved != name:  # another writer saved it in between: theirs has the same role, keep one
        storage.delete(saved)


@dataclass
class CopyReport:
    copied: list[str] = field(default_factory=list)
    already_there: list[str] = field(default_factory=list)  # the same name and size in the storage

    @property
    def files(self) -> int:
        return len(self.copied) + len(self.already_there)


def files_under(folder: Path) -> Iterator[str]:
    """Storage names of the files under a local media folder (temporary and hidden files left out)."""
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if path.is_file() and not any(part.startswith(".") for part in relative.parts):
            yield relative.as_posix()


def copy_folder(folder: Path, storage: Storage = default_storage, on_file: Callable[[], None] = lambda: None):
    """Copy every file under ``folder`` into ``storage`` under the same name, skipping those already there with
    the same size; a re-run after an interruption copies only what is left."""
    report = CopyReport()

    def copy(name: str) -> None:
        size = (folder / name).stat().st_size
        if storage.exists(name) and storage.size(name) == size:
            report.already_there.append(name)
        else:
            with open(folder / name, "rb") as handle:
                replace(name, File(handle, name=name), storage)
            report.copied.append(name)
        on_file()

    with ThreadPoolExecutor(COPY_THREADS) as pool:
        list(pool.map(copy, files_under(folder)))  # list(): raise the first failure
    return report


def missing_files(storage: Storage = default_storage) -> tuple[int, list[str]]:
    """(how many files the database names, those of them the storage lacks): photos, candidates, features and
    batch uploads not yet located."""
    from similarity.models import BatchPhoto, Candidate, PhotoFeatures, ReferencePhoto

    names = [
        *ReferencePhoto.objects.values_list("image", flat=True),
        *Candidate.objects.exclude(image="").values_list("image", flat=True),
        *PhotoFeatures.objects.values_list("file", flat=True),
        *BatchPhoto.objects.exclude(file="").values_list("file", flat=True),
    ]
    with ThreadPoolExecutor(COPY_THREADS) as pool:
        present = list(pool.map(storage.exists, names))
    return len(names), [name for name, there in zip(names, present) if not there]
