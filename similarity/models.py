"""The gallery: reference photos with known coordinates and their embeddings.

The database is the source of truth; the FAISS index (see ``index.py``) is a
rebuildable copy of the vectors stored here.
"""

import hashlib
import math
import re
import uuid
from pathlib import PurePath

import numpy as np
from django.core.exceptions import ValidationError
from django.core.validators import FileExtensionValidator
from django.db import IntegrityError, models, transaction

from similarity.images import ACCEPTED_EXTENSIONS, ACCEPTED_NAMES

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


class DuplicatePhoto(ValidationError):
    """The image is already in the gallery (found at save time: another upload of it won a race)."""

    def __init__(self, existing: "ReferencePhoto"):
        self.existing = existing
        super().__init__({"image": f"This image is already in the gallery as photo {existing.pk}."}, code="duplicate")


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

    class Meta:
        ordering = ["-created", "-id"]
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

    def clean(self):
        super().clean()
        if self.image and not self.sha256:
            self.sha256 = sha256_of_file(self.image)
        if self.sha256:
            duplicate = ReferencePhoto.objects.filter(sha256=self.sha256).exclude(pk=self.pk).first()
            if duplicate is not None:
                raise ValidationError({"image": f"This image is already in the gallery as photo {duplicate.pk} ({duplicate})."})

    def save(self, *args, **kwargs):
        # Range checks run on every save, not only in forms: NaN/inf never reach the database.
        validate_latitude(self.latitude)
        validate_longitude(self.longitude)
        new_file = bool(self.image) and not getattr(self.image, "_committed", True)
        if self.image and (not self.sha256 or new_file):
            digest = sha256_of_file(self.image)
            if digest != self.sha256:  # a new or replaced file needs a new vector
                self.sha256 = digest
                self.embedding_status = EmbeddingStatus.PENDING
                self.embedding_error = ""
        try:
            with transaction.atomic():  # a savepoint: the caller's transaction stays usable
                super().save(*args, **kwargs)
        except IntegrityError:
            if new_file and self.image:  # the file was stored before the row was refused
                self.image.storage.delete(self.image.name)
            existing = ReferencePhoto.objects.filter(sha256=self.sha256).exclude(pk=self.pk).first()
            if existing is not None:
                raise DuplicatePhoto(existing) from None
            raise


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
