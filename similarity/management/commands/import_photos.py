"""python manage.py import_photos PATH [--manifest CSV]"""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from similarity.gallery.exchange import VECTORS_FOLDER, ExchangeError, read_vectors
from similarity.gallery.importer import ManifestError, find_images, import_photos, read_manifest_csv
from similarity.models import duplicate_reason


class Command(BaseCommand):
    help = (
        "Import the images under PATH as reference photos. Coordinates come from the CSV manifest "
        "(columns file, latitude, longitude, optional title, address, source, license, notes; file relative "
        "to the CSV) or else from each photo's GPS EXIF. Files already in the gallery (same bytes) are skipped. "
        "Vectors exported beside the manifest (vectors/*.npz, export_gallery --vectors) are stored with their "
        "photos, which then need no embedding."
    )

    def add_arguments(self, parser):
        parser.add_argument("path", type=Path, help="Folder (searched recursively) or single image file.")
        parser.add_argument("--manifest", type=Path, help="CSV with file, latitude, longitude[, title, address].")
        parser.add_argument("--no-progress", action="store_true", help="Do not show a progress bar.")

    def handle(self, *args, path: Path, manifest: Path | None, no_progress: bool, **options):
        if not path.exists():
            raise CommandError(f"{path} does not exist.")
        try:
            rows = read_manifest_csv(manifest) if manifest else {}
        except ManifestError as exc:
            raise CommandError(str(exc)) from None
        vectors = {}
        vector_folder = manifest.parent / VECTORS_FOLDER if manifest else None
        if vector_folder is not None and vector_folder.is_dir():
            try:
                vectors = read_vectors(vector_folder)
            except ExchangeError as exc:
                raise CommandError(str(exc)) from None
            self.stdout.write(f"Vectors for {len(vectors)} photo(s) found in {vector_folder}.")
        images = find_images(path)
        if not images:
            raise CommandError(f"No images (.jpg, .jpeg, .png, .webp, .gif, .heic) under {path}.")
        with tqdm(total=len(images), unit="photo", disable=no_progress, file=self.stderr) as bar:
            report = import_photos(images, rows, vectors=vectors, on_progress=bar.update)
        self.stdout.write(
            f"Imported {len(report.imported)}, already present {len(report.duplicates)}, skipped {len(report.skipped)}."
        )
        for image_path, existing in report.duplicates:
            self.stdout.write(f"  already present: {image_path}: {duplicate_reason(existing)}")
        for image_path, reason in report.skipped:
            self.stdout.write(f"  skipped: {image_path}: {reason}")
        waiting = sum(photo.embedding_status == "pending" for photo in report.imported)
        if waiting:
            self.stdout.write(
                f"{waiting} embedding(s) are queued; run `python manage.py build_clip_index` to embed and index now."
            )
        elif report.imported:
            self.stdout.write("Every imported photo came with its vector; `build_clip_index` indexes them.")
