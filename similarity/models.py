"""The gallery: reference photos with known coordinates and their embeddings; proposed photos;
the per-client request counters behind the API's budgets.

The database is the source of truth; the FAISS index (see ``similarity.index``) is a
rebuildable copy of the vectors stored here.
"""

import hashlib
import math
import re
import uuid
from pathlib import PurePath

import numpy as np
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import FileExtensionValidator
from django.db import IntegrityError, models, transaction
from django.utils import timezone

from similarity.gallery.coverage import tile_of
from similarity.gallery.images import ACCEPTED_EXTENSIONS, ACCEPTED_NAMES

NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", re.ASCII)


def parse_number(text) -> float:
    """A plain decimal number ('48.8584', '-2.29e1'); ValueError for anything float() would stretch to
    read ('1_0', full-width digits, 'nan', 'inf')."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return float(text)
    if not isinstance(text, str) or not NUMBER.fullmatch(text.strip()):
        raise ValueError(f"{text!r} is not a plain decimal number")
    return float(text.strip())


def validate_latitude(value):
    if value is None or not math.isfinite(value) or not -90.0 <= value <= 90.0:
        raise ValidationError("Latitude must be a finite number between -90 and 90.", code="latitude")


def validate_longitude(value):
    if value is None or not math.isfinite(value) or not -180.0 <= value <= 180.0:
        raise ValidationError("Longitude must be a finite number between -180 and 180.", code="longitude")


def reference_image_path(instance, filename):
    """A generated name: a client's file name never becomes a path."""
    suffix = PurePath(filename).suffix.lower()
    if suffix not in ACCEPTED_EXTENSIONS:
        suffix = ".img"
    name = uuid.uuid4().hex
    return f"reference/{name[:2]}/{name}{suffix}"


def sha256_of_file(field_file) -> str:
    digest = hashlib.sha256()
    field_file.open("rb")
    for chunk in field_file.chunks():
        digest.update(chunk)
    field_file.seek(0)
    return digest.hexdigest()


def duplicate_reason(existing: "ReferencePhoto") -> str:
    return f"This image is already in the gallery as photo {existing.pk}."


class DuplicatePhoto(ValidationError):
    """The image is already in the gallery (found at save time: another upload of it won a race)."""

    def __init__(self, existing: "ReferencePhoto"):
        self.existing = existing
        super().__init__({"image": duplicate_reason(existing)}, code="duplicate")


class EmbeddingStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    READY = "ready", "Ready"
    FAILED = "failed", "Failed"


class PhotoImageField(models.ImageField):
    """An image field whose extension check names the formats the service decodes (images.ACCEPTED),
    not every format Pillow knows."""

    default_validators = [
        FileExtensionValidator(
            [extension.lstrip(".") for extension in ACCEPTED_EXTENSIONS],
            message=f"“%(extension)s” files are not taken; send {ACCEPTED_NAMES}.",
        )
    ]


class ReferencePhoto(models.Model):
    image = PhotoImageField(upload_to=reference_image_path, width_field="width", height_field="height")
    width = models.PositiveIntegerField(null=True, blank=True, editable=False)
    height = models.PositiveIntegerField(null=True, blank=True, editable=False)
    title = models.CharField(max_length=200, blank=True)
    address = models.CharField(max_length=300, blank=True)
    latitude = models.FloatField(validators=[validate_latitude])
    longitude = models.FloatField(validators=[validate_longitude])
    notes = models.TextField(blank=True)
    source = models.CharField(max_length=300, blank=True, help_text="Where the photo comes from.")
    license = models.CharField(max_length=200, blank=True)
    sha256 = models.CharField(max_length=64, unique=True, editable=False, db_index=True)
    is_active = models.BooleanField(default=True, help_text="Inactive photos are never returned by searches.")
    # State of the embedding for the configured encoder.
    embedding_status = models.CharField(
        max_length=16, choices=EmbeddingStatus.choices, default=EmbeddingStatus.PENDING, db_index=True
    )
    embedding_error = models.TextField(blank=True)
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)
    # the Web Mercator tile at coverage.TILE_ZOOM holding the position: the coverage map counts by it
    tile_x = models.PositiveIntegerField(default=0, editable=False)
    tile_y = models.PositiveIntegerField(default=0, editable=False)

    class Meta:
        ordering = ["-created", "-id"]
        indexes = [models.Index(fields=["tile_x", "tile_y"], name="reference_photo_tile")]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(latitude__gte=-90, latitude__lte=90), name="reference_photo_latitude_range"
            ),
            models.CheckConstraint(
                condition=models.Q(longitude__gte=-180, longitude__lte=180), name="reference_photo_longitude_range"
            ),
        ]

    def __str__(self):
        return self.title or f"Photo {self.pk}"

    @classmethod
    def from_db(cls, db, field_names, values):
        photo = super().from_db(db, field_names, values)
        photo._stored_position = (photo.__dict__.get("latitude"), photo.__dict__.get("longitude"))
        return photo

    def clean(self):
        super().clean()
        if self.image and not self.sha256:
            self.sha256 = sha256_of_file(self.image)
        if self.sha256:
            duplicate = ReferencePhoto.objects.filter(sha256=self.sha256).exclude(pk=self.pk).first()
            if duplicate is not None:
                raise ValidationError({"image": duplicate_reason(duplicate)})

    def save(self, *args, **kwargs):
        # Range checks run on every save, not only in forms: NaN/inf never reach the database.
        validate_latitude(self.latitude)
        validate_longitude(self.longitude)
        self.tile_x, self.tile_y = tile_of(self.latitude, self.longitude)
        new_file = bool(self.image) and not getattr(self.image, "_committed", True)
        if self.image and (not self.sha256 or new_file):
            digest = sha256_of_file(self.image)
            if digest != self.sha256:  # a new or replaced file needs a new vector
                self.sha256 = digest
                self.embedding_status = EmbeddingStatus.PENDING
                self.embedding_error = ""
        moved = self.pk is not None and getattr(self, "_stored_position", None) not in (None, self.position)
        try:
            with transaction.atomic():  # a savepoint: the caller's transaction stays usable
                super().save(*args, **kwargs)
                if moved:  # the index snapshot knows the old position: the vectors join the delta
                    self.embeddings.update(updated=timezone.now())
        except IntegrityError:
            if new_file and self.image:  # the file was stored before the row was refused
                self.image.storage.delete(self.image.name)
            existing = ReferencePhoto.objects.filter(sha256=self.sha256).exclude(pk=self.pk).first()
            if existing is not None:
                raise DuplicatePhoto(existing) from None
            raise
        self._stored_position = self.position

    @property
    def position(self) -> tuple[float, float]:
        return (self.latitude, self.longitude)


class PhotoEmbedding(models.Model):
    """One vector per (photo, encoder); remembers which file bytes it came from."""

    photo = models.ForeignKey(ReferencePhoto, on_delete=models.CASCADE, related_name="embeddings")
    encoder = models.CharField(max_length=300, db_index=True)
    dim = models.PositiveIntegerField()
    vector = models.BinaryField()
    source_sha256 = models.CharField(max_length=64)
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True, db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["photo", "encoder"], name="one_embedding_per_photo_and_encoder")]
        indexes = [models.Index(fields=["encoder", "updated"], name="embedding_encoder_updated")]

    def __str__(self):
        return f"{self.encoder} vector of photo {self.photo_id}"

    @classmethod
    def current(cls, encoder_id: str):
        """Vectors of an encoder that describe an active photo's present file."""
        return cls.objects.filter(encoder=encoder_id, photo__is_active=True, source_sha256=models.F("photo__sha256"))

    def as_array(self) -> np.ndarray:
        return np.frombuffer(bytes(self.vector), dtype=np.float32, count=self.dim)

    @staticmethod
    def pack(vector: np.ndarray) -> bytes:
        return np.ascontiguousarray(vector, dtype=np.float32).tobytes()


class PhotoFeatures(models.Model):
    """A reference photo's local features for geometric verification (similarity/geometry/verification.py).

    The file lives in the media storage beside the photo; ``source_sha256``
    names the file bytes they were extracted from, so a replaced photo's
    features are stale until extracted again, as its vectors are.
    """

    photo = models.OneToOneField(ReferencePhoto, on_delete=models.CASCADE, related_name="local_features")
    source_sha256 = models.CharField(max_length=64)
    file = models.CharField(max_length=400, help_text="Storage name of the features file.")
    count = models.PositiveIntegerField(help_text="Keypoints.")
    size = models.PositiveIntegerField(help_text="Bytes on storage.")
    format_version = models.PositiveSmallIntegerField(
        default=1, help_text="How the file is laid out (verification.FORMAT_VERSION); older ones are re-extracted."
    )
    updated = models.DateTimeField(auto_now=True)

    def __str__(self):
        return f"{self.count} local features of photo {self.photo_id}"

    @classmethod
    def current(cls):
        return cls.objects.filter(source_sha256=models.F("photo__sha256"))


def candidate_image_path(instance, filename):
    """A generated name, kept apart from the gallery's files until a curator approves."""
    suffix = PurePath(filename).suffix.lower()
    name = uuid.uuid4().hex
    return f"candidates/{name[:2]}/{name}{suffix if suffix in ACCEPTED_EXTENSIONS else '.img'}"


class CandidateStatus(models.TextChoices):
    PENDING = "pending", "Waiting for review"
    APPROVED = "approved", "Approved"
    REJECTED = "rejected", "Rejected"


class Candidate(models.Model):
    """A looked-up photo proposed as a reference photo, waiting for a curator.

    It keeps what the lookup found (the proposed position, how sure, which
    source, the matched reference photos) and who proposed it. A curator
    corrects the position if needed and approves (it becomes a reference
    photo and is embedded like any other) or rejects (its file is deleted).
    """

    image = PhotoImageField(upload_to=candidate_image_path, width_field="width", height_field="height", blank=True)
    width = models.PositiveIntegerField(null=True, blank=True, editable=False)
    height = models.PositiveIntegerField(null=True, blank=True, editable=False)
    sha256 = models.CharField(max_length=64, db_index=True, editable=False)
    latitude = models.FloatField(validators=[validate_latitude], help_text="Proposed; correct it if needed.")
    longitude = models.FloatField(validators=[validate_longitude], help_text="Proposed; correct it if needed.")
    confidence = models.FloatField(editable=False)
    radius_m = models.FloatField(null=True, blank=True, editable=False)
    source = models.CharField(max_length=100, editable=False, help_text="The locate source that answered.")
    best_similarity = models.FloatField(null=True, blank=True, editable=False)
    matches = models.JSONField(default=list, blank=True, editable=False, help_text="[{id, similarity}], best first.")
    near_duplicate_of = models.ForeignKey(
        ReferencePhoto, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", editable=False
    )
    title = models.CharField(max_length=200, blank=True)
    address = models.CharField(max_length=300, blank=True)
    notes = models.TextField(blank=True)
    proposed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", editable=False
    )
    proposed_from = models.GenericIPAddressField(null=True, blank=True, editable=False)
    automatic = models.BooleanField(
        default=False, editable=False, help_text="Proposed by SIMILARITY_SUGGEST_CONFIDENCE."
    )
    status = models.CharField(
        max_length=16, choices=CandidateStatus.choices, default=CandidateStatus.PENDING, db_index=True, editable=False
    )
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", editable=False
    )
    reviewed_at = models.DateTimeField(null=True, blank=True, editable=False)
    photo = models.OneToOneField(
        ReferencePhoto,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="candidate",
        editable=False,
        help_text="The reference photo it became.",
    )
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(latitude__gte=-90, latitude__lte=90), name="candidate_latitude_range"
            ),
            models.CheckConstraint(
                condition=models.Q(longitude__gte=-180, longitude__lte=180), name="candidate_longitude_range"
            ),
        ]

    def __str__(self):
        return self.title or f"Candidate {self.pk}"

    def save(self, *args, **kwargs):
        validate_latitude(self.latitude)
        validate_longitude(self.longitude)
        super().save(*args, **kwargs)


class RequestCounter(models.Model):
    """One client's requests against one budget (api/throttles.py): this window's count and the last one's.

    Rows are counted up by a single UPDATE in a transaction, so requests in
    any process or host each see all the others' (the row lock, or SQLite's
    write lock, orders them); a row is deleted once both of its windows are over.
    """

    key = models.CharField(max_length=255, unique=True, help_text="Budget and client.")
    window = models.BigIntegerField(help_text="The current window's number: its start (Unix time) / its length.")
    count = models.PositiveIntegerField(help_text="Requests allowed in the current window.")
    previous = models.PositiveIntegerField(default=0, help_text="Requests allowed in the window before it.")
    expires_at = models.FloatField(db_index=True, help_text="Unix time when both windows are over.")

    def __str__(self):
        return f"{self.key}: {self.count} in window {self.window}"


class BatchStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    DONE = "done", "Done"


class LocateBatch(models.Model):
    """Photos a signed-in client handed over at once to be located (``similarity/batches.py``).

    Its photos' files are kept only until they are located (unless
    GEOLOCATOR_BATCH_KEEP_UPLOADS); their results stay with the batch.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="locate_batches")
    status = models.CharField(max_length=10, choices=BatchStatus.choices, default=BatchStatus.QUEUED)
    options = models.JSONField(default=dict, blank=True, help_text="The lookup options of every photo.")
    total = models.PositiveIntegerField(help_text="Photos in the batch.")
    done = models.PositiveIntegerField(default=0, help_text="Photos located so far.")
    bytes = models.PositiveBigIntegerField(default=0, help_text="What its photos' files take on storage.")
    cost = models.PositiveIntegerField(default=0, help_text="What it cost the client's batch budget, in lookup units.")
    created = models.DateTimeField(auto_now_add=True)
    finished = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created"]
        verbose_name_plural = "locate batches"

    def __str__(self):
        return f"Batch {self.pk} ({self.done}/{self.total})"


class BatchPhoto(models.Model):
    """One photo of a batch: its file until located, then its result row (``locate/batch.py`` COLUMNS)."""

    batch = models.ForeignKey(LocateBatch, on_delete=models.CASCADE, related_name="photos")
    position = models.PositiveIntegerField()
    name = models.CharField(max_length=255, help_text="The client's file name (text only, never a path).")
    file = models.CharField(max_length=300, blank=True, help_text="Storage name of the uploaded file, until dropped.")
    result = models.JSONField(null=True, blank=True, help_text="The result row, once located.")

    class Meta:
        ordering = ["batch", "position"]
        constraints = [models.UniqueConstraint(fields=["batch", "position"], name="batch_photo_position")]

    def __str__(self):
        return self.name
