"""Batches: many photos a signed-in client hands over at once, located in the background.

* :func:`plan_batch` lists the photos in the uploaded files (images, or
  zips of them) and holds them to the limits (GEOLOCATOR_BATCH_*: photos and
  bytes) from sizes and headers alone, so a zip bomb or a path that climbs
  out is refused before anything is read or stored; the view then charges
  the client's batch budget what the lookups will cost (api/pricing.py);
* :func:`create_batch` stores the photos, one in memory at a time, holds
  the client to its open batches (counted after its own is written, under a
  lock on the client's row, so concurrent requests on any host cannot both
  pass) and queues the work after the commit;
* :func:`locate_pending` (the ``similarity.tasks.locate_batch`` task) locates
  them one by one with the same sources and settings as ``/api/locate/``
  (``locate/batch.py``), saving each result as it goes, so a worker that dies
  loses at most the photo in hand; it hands the rest to a new task after a
  time slice, so one batch does not hold a worker for long;
* files are dropped once located, unless GEOLOCATOR_BATCH_KEEP_UPLOADS.

Every refusal is a :class:`BatchRefused` whose message names the limit.
"""

from __future__ import annotations

import io
import time
import zipfile
from dataclasses import dataclass
from pathlib import PurePosixPath

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from similarity.gallery.images import ACCEPTED_EXTENSIONS, ImageRejected, check_header, format_size
from similarity.locate.batch import locate_photo, row_for_failure
from similarity.models import BatchPhoto, BatchStatus, LocateBatch

TIME_SLICE_SECONDS = 60  # a task locates photos this long, then queues the rest as a new task
MAX_ZIP_RATIO = 50  # a member that inflates more than this is refused (photos hardly compress)
READ_STEP = 1024 * 1024
OPEN = (BatchStatus.QUEUED, BatchStatus.RUNNING)


class BatchRefused(Exception):
    """The batch cannot be taken; ``status`` is 400 (the request is wrong) or 429 (not now)."""

    def __init__(self, message: str, status: int = 400, wait: float | None = None):
        super().__init__(message)
        self.status = status
        self.wait = wait


@dataclass
class PlannedPhoto:
    """A photo of the batch, known from its file's or zip member's header; read when stored, one at a time."""

    name: str  # the client's name, shown as text only
    size: int
    upload: UploadedFile
    member: zipfile.ZipInfo | None = None

    def read(self) -> bytes:
        if self.member is None:
            self.upload.seek(0)
            return self.upload.read()
        with zipfile.ZipFile(self.upload) as archive:
            return _read_bounded(archive, self.member, self.upload.name)


def _check_size(name: str, size: int) -> None:
    limit = settings.SIMILARITY_MAX_UPLOAD_BYTES
    if size == 0:
        raise BatchRefused(f"{name}: the file is empty.")
    if size > limit:
        raise BatchRefused(f"{name}: the file is {format_size(size)}; at most {format_size(limit)} a photo.")


class _Budget:
    """Photos and bytes taken so far against a batch's limits."""

    def __init__(self):
        self.photos = 0
        self.bytes = 0

    def take(self, size: int) -> None:
        self.photos += 1
        self.bytes += size
        if self.photos > settings.GEOLOCATOR_BATCH_MAX_FILES:
            raise BatchRefused(f"A batch takes at most {settings.GEOLOCATOR_BATCH_MAX_FILES} photos.")
        if self.bytes > settings.GEOLOCATOR_BATCH_MAX_BYTES:
            raise BatchRefused(
                f"A batch takes at most {format_size(settings.GEOLOCATOR_BATCH_MAX_BYTES)} of photos in all."
            )


def _zip_members(upload, budget: _Budget) -> list[PlannedPhoto]:
    try:
        archive = zipfile.ZipFile(upload)
    except (zipfile.BadZipFile, OSError, ValueError):
        raise BatchRefused(f"{upload.name}: not a readable zip file.") from None
    photos = []
    with archive:
        for member in archive.infolist():
            path = PurePosixPath(member.filename.replace("\\", "/"))
            if member.is_dir() or path.parts[:1] == ("__MACOSX",) or path.name.startswith("."):
                continue  # folders, and the resource forks and hidden files archivers add
            if path.is_absolute() or ".." in path.parts or ":" in path.parts[0]:
                raise BatchRefused(f"{upload.name}: the member {member.filename!r} has a path that leaves the zip.")
            if path.suffix.lower() not in ACCEPTED_EXTENSIONS:
                raise BatchRefused(f"{upload.name}: {path.name} is not a photo ({', '.join(ACCEPTED_EXTENSIONS)}).")
            _check_size(path.name, member.file_size)
            if member.file_size > MAX_ZIP_RATIO * max(member.compress_size, 1):
                raise BatchRefused(
                    f"{upload.name}: {path.name} inflates more than {MAX_ZIP_RATIO}x: refused as a zip bomb."
                )
            budget.take(member.file_size)
            photos.append(PlannedPhoto(path.name, member.file_size, upload, member))
    return photos


def _read_bounded(archive: zipfile.ZipFile, member: zipfile.ZipInfo, zip_name: str) -> bytes:
    """A member's bytes, refused as soon as they pass the size its header claims (a lying header)."""
    chunks, size = [], 0
    try:
        with archive.open(member) as stream:
            while chunk := stream.read(READ_STEP):
                size += len(chunk)
                if size > member.file_size:
                    raise BatchRefused(f"{zip_name}: {member.filename} is larger than its header says: refused.")
                chunks.append(chunk)
    except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, RuntimeError) as exc:
        raise BatchRefused(f"{zip_name}: {member.filename} cannot be read ({exc}).") from None
    return b"".join(chunks)


def plan_batch(uploads) -> list[PlannedPhoto]:
    """The photos in the uploaded files (a zip's members in its order), held to the batch limits from their
    sizes and headers alone: nothing is read into memory yet."""
    budget = _Budget()
    photos: list[PlannedPhoto] = []
    for upload in uploads:
        upload.seek(0)
        if zipfile.is_zipfile(upload):
            photos.extend(_zip_members(upload, budget))
            continue
        _check_size(upload.name, upload.size)
        budget.take(upload.size)
        photos.append(PlannedPhoto(PurePosixPath(upload.name or "photo").name, upload.size, upload))
    if not photos:
        raise BatchRefused("The batch holds no photos.")
    return photos


def check_open_batches(owner, *, counting_a_new_one: bool = False) -> None:
    """429 when the client already has as many unfinished batches as it may (the one being created, if it is
    already written, not counted)."""
    limit = settings.GEOLOCATOR_BATCH_OPEN_PER_CLIENT
    if LocateBatch.objects.filter(owner=owner, status__in=OPEN).count() - counting_a_new_one >= limit:
        raise BatchRefused(
            f"At most {limit} unfinished batch(es) per client: wait until one is done, or delete one.", status=429
        )


def create_batch(owner, photos: list[PlannedPhoto], options: dict, cost: int) -> LocateBatch:
    """Store the photos (one in memory at a time, each checked to be a photo from its header) as a new batch
    of ``owner``, and queue its work once committed; BatchRefused, with nothing stored, for one that is not."""
    stored: list[str] = []
    try:
        with transaction.atomic():
            # one new batch at a time per client: PostgreSQL waits on the row lock, SQLite on its write lock
            list(get_user_model().objects.select_for_update().filter(pk=owner.pk).values_list("pk", flat=True))
            batch = LocateBatch.objects.create(
                owner=owner, options=options, total=len(photos), bytes=sum(p.size for p in photos), cost=cost
            )
            check_open_batches(owner, counting_a_new_one=True)  # after the write, so a concurrent one is seen
            for position, photo in enumerate(photos):
                data = photo.read()
                try:
                    check_header(io.BytesIO(data))
                except ImageRejected as exc:
                    raise BatchRefused(f"{photo.name}: {exc}") from None
                suffix = PurePosixPath(photo.name).suffix.lower()
                name = default_storage.save(f"batches/{batch.pk}/{position:05d}{suffix}", ContentFile(data))
                stored.append(name)
                BatchPhoto.objects.create(batch=batch, position=position, name=photo.name[:255], file=name)
            transaction.on_commit(lambda: queue_batch(batch.pk))
    except BaseException:
        for name in stored:  # nothing of a batch that was not taken stays on storage
            default_storage.delete(name)
        raise
    return batch


def queue_batch(batch_id) -> None:
    from django_q.tasks import async_task

    async_task("similarity.tasks.locate_batch", str(batch_id), task_name=f"locate batch {batch_id}")


def locate_pending(batch_id: str, time_slice: float = TIME_SLICE_SECONDS) -> dict:
    """Locate the batch's photos not yet located, for up to ``time_slice`` seconds; what was done."""
    batch = LocateBatch.objects.filter(pk=batch_id).first()
    if batch is None:
        return {"batch": batch_id, "outcome": "deleted"}
    LocateBatch.objects.filter(pk=batch.pk, status=BatchStatus.QUEUED).update(status=BatchStatus.RUNNING)
    started, located = time.monotonic(), 0
    for photo in BatchPhoto.objects.filter(batch=batch, result__isnull=True).order_by("position"):
        if located and time.monotonic() - started > time_slice:
            queue_batch(batch.pk)  # the rest in a new task, behind whatever else waits
            return {"batch": batch_id, "outcome": "continued", "located": located}
        photo.result = _locate(photo, batch.options)
        kept = photo.file if settings.GEOLOCATOR_BATCH_KEEP_UPLOADS else ""
        with transaction.atomic():
            if not BatchPhoto.objects.filter(pk=photo.pk, result__isnull=True).update(result=photo.result, file=kept):
                continue  # another worker got there first (a redelivered task), or the batch was deleted
            LocateBatch.objects.filter(pk=batch.pk).update(done=F("done") + 1)
        if not kept and photo.file:
            default_storage.delete(photo.file)
        located += 1
    LocateBatch.objects.filter(pk=batch.pk).exclude(status=BatchStatus.DONE).update(
        status=BatchStatus.DONE, finished=timezone.now()
    )
    return {"batch": batch_id, "outcome": "done", "located": located}


def _locate(photo: BatchPhoto, options: dict) -> dict:
    try:
        with default_storage.open(photo.file, "rb") as handle:
            data = handle.read()
    except (OSError, ValueError):
        return row_for_failure(photo.name, "The uploaded file is gone from storage.")
    return locate_photo(photo.name, data, options=options)


def delete_batch(batch: LocateBatch) -> None:
    """The batch, its results and whatever of its files are still stored."""
    names = [name for name in batch.photos.values_list("file", flat=True) if name]
    with transaction.atomic():
        batch.delete()
        transaction.on_commit(lambda: [default_storage.delete(name) for name in names])


def results(batch: LocateBatch) -> list[dict]:
    """The result rows located so far, in the order the photos came."""
    return [row for row in batch.photos.order_by("position").values_list("result", flat=True) if row is not None]
