"""Shared fixtures: a private data dir per test, generated images, the sample gallery."""

import io
import random
from pathlib import Path

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from PIL import ExifTags, Image, ImageDraw

from similarity import index
from tests.servers import milvus_server, s3_server  # noqa: F401 (session fixtures of real servers)

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_GALLERY = ROOT / "sample_gallery"


@pytest.fixture(autouse=True)
def data_dir(settings, tmp_path):
    """Every test gets empty media and index folders; no index is cached across tests."""
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.SIMILARITY_INDEX_DIR = tmp_path / "index"
    index.forget_loaded_index()
    yield tmp_path
    index.forget_loaded_index()


def gps_exif(latitude: float, longitude: float) -> Image.Exif:
    def dms(value):
        value = abs(value)
        degrees = int(value)
        minutes = int((value - degrees) * 60)
        seconds = round(((value - degrees) * 60 - minutes) * 60, 4)
        return (float(degrees), float(minutes), seconds)

    exif = Image.Exif()
    exif[ExifTags.Base.GPSInfo] = {
        ExifTags.GPS.GPSLatitudeRef: "N" if latitude >= 0 else "S",
        ExifTags.GPS.GPSLatitude: dms(latitude),
        ExifTags.GPS.GPSLongitudeRef: "E" if longitude >= 0 else "W",
        ExifTags.GPS.GPSLongitude: dms(longitude),
    }
    return exif


def make_image_bytes(seed: int = 0, *, size=(320, 240), fmt="JPEG", exif: Image.Exif | None = None) -> bytes:
    """A distinct synthetic picture per seed (shapes on a coloured ground)."""
    rng = random.Random(seed)
    image = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x0, y0 = rng.randrange(size[0]), rng.randrange(size[1])
        x1, y1 = x0 + rng.randrange(20, 160), y0 + rng.randrange(20, 120)
        colour = tuple(rng.randrange(256) for _ in range(3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x0, y0, x1, y1], fill=colour)
    buffer = io.BytesIO()
    kwargs = {"exif": exif} if exif is not None else {}
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def upload(data: bytes, name: str = "photo.jpg", content_type: str = "image/jpeg") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, content_type=content_type)


@pytest.fixture
def make_photo(db):
    """Create a stored reference photo from a synthetic image."""
    from similarity.models import ReferencePhoto

    def create(seed: int = 0, latitude: float = 48.8584, longitude: float = 2.2945, **fields):
        return ReferencePhoto.objects.create(
            image=upload(make_image_bytes(seed), f"seed-{seed}.jpg"),
            latitude=latitude,
            longitude=longitude,
            title=fields.pop("title", f"Photo {seed}"),
            **fields,
        )

    return create


@pytest.fixture
def database_down():
    """Point the connection at a database that is not there (a closed port, or an unopenable file)."""
    original = dict(connection.settings_dict)

    def stop():
        connection.close()
        if connection.vendor == "sqlite":
            connection.settings_dict["NAME"] = "/nonexistent-dir/geolocator.sqlite3"
        else:
            connection.settings_dict["PORT"] = "1"  # nothing listens there: connection refused

    def restore():
        connection.close()
        connection.settings_dict.clear()
        connection.settings_dict.update(original)

    yield stop, restore
    restore()


def make_curator(username: str = "curator", **fields):
    """A staff account allowed to add, change and delete reference photos (not a superuser)."""
    from django.contrib.auth.models import Permission, User

    user = User.objects.create_user(username, password="x", is_staff=True, **fields)
    user.user_permissions.add(
        *Permission.objects.filter(
            codename__in=["add_referencephoto", "change_referencephoto", "delete_referencephoto"]
        )
    )
    return user


@pytest.fixture
def unit_vectors():
    def make(n: int, dim: int = 8, seed: int = 0) -> np.ndarray:
        vectors = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    return make


@pytest.fixture
def sample_gallery(db):
    """The shipped sample gallery, imported and embedded with the offline encoder."""
    from similarity.gallery.importer import find_images, import_photos, read_manifest_csv
    from similarity.search.embedding import embed_photos
    from similarity.search.vectors import get_encoder

    report = import_photos(find_images(SAMPLE_GALLERY / "photos"), read_manifest_csv(SAMPLE_GALLERY / "manifest.csv"))
    assert not report.skipped
    embed_photos(report.imported, get_encoder())
    return report.imported


@pytest.fixture
def verified_gallery(sample_gallery, settings):
    """The sample gallery with its local features and an index, geometric verification on."""
    from similarity.search import features, maintenance

    settings.SIMILARITY_VERIFY = "all"
    features.forget_cached()  # no features remembered from another test
    assert not features.extract_missing().failed
    maintenance.rebuild_index()
    return sample_gallery


@pytest.fixture(scope="session")
def random_clip():
    """ViT-B-32 with random weights: the real CLIP code path and shapes, no download.

    It proves plumbing only; retrieval quality is tested with the offline encoder.
    """
    from similarity.runtime.encoders import OpenClipEncoder

    return OpenClipEncoder("ViT-B-32", pretrained=None, device="cpu")


@pytest.fixture
def use_random_clip(settings, monkeypatch, random_clip):
    """Make the random-weight CLIP model the configured encoder for this test."""
    from similarity.runtime import registry

    settings.SIMILARITY_ENCODER = random_clip.id
    registry.register(random_clip)
    yield random_clip
    registry.unregister(random_clip.id)


@pytest.fixture
def no_clip_weights(monkeypatch, tmp_path):
    """No CLIP weights in any cache and no model hub, as on an offline machine."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))


@pytest.fixture
def fresh_auto_choice(monkeypatch, settings):
    """SIMILARITY_ENCODER=auto, decided afresh in this test."""
    from similarity.runtime import registry

    settings.SIMILARITY_ENCODER = "auto"
    registry.reset(loaded=False)
    yield
    registry.reset(loaded=False)


@pytest.fixture
def stored_chunks(monkeypatch):
    """Bytes the storing upload handlers (memory, temporary file) were handed."""
    from django.core.files import uploadhandler

    seen = []
    for handler in (uploadhandler.MemoryFileUploadHandler, uploadhandler.TemporaryFileUploadHandler):
        original = handler.receive_data_chunk

        def recording(self, raw_data, start, original=original):
            seen.append(len(raw_data))
            return original(self, raw_data, start)

        monkeypatch.setattr(handler, "receive_data_chunk", recording)
    return seen
