"""python manage.py import_photos PATH [--manifest CSV]"""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from similarity.importer import ManifestError, find_images, import_photos, read_manifest_csv


class Command(BaseCommand):
    help = (
        "Import the images under PATH as reference photos. Coordinates come from the CSV manifest "
        "(columns file, latitude, longitude, optional title, address; file relative to the CSV) "
        "or else from each photo's GPS EXIF. Files already in the gallery (same bytes) are skipped."
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
        images = find_images(path)
        if not images:
            raise CommandError(f"No images (.jpg, .jpeg, .png, .webp, .gif, .heic) under {path}.")
        with tqdm(total=len(images), unit="photo", disable=no_progress, file=self.stderr) as bar:
            report = import_photos(images, rows, on_progress=bar.update)
        self.stdout.write(
            f"Imported {len(report.imported)}, already present {len(report.duplicates)}, skipped {len(report.skipped)}."
        )
        for image_path, existing in report.duplicates:
            self.stdout.write(f"  already present: {image_path} (photo {existing.pk})")
        for image_path, reason in report.skipped:
            self.stdout.write(f"  skipped: {image_path}: {reason}")
        if report.imported:
            self.stdout.write("Embeddings are queued; run `python manage.py build_clip_index` to embed and index now.")
