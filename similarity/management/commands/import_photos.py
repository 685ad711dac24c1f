"""python manage.py import_photos PATH [--manifest CSV] [--trust-vectors]"""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from similarity.gallery.exchange import VECTORS_FOLDER, ExchangeError, check_sample, read_vectors
from similarity.gallery.importer import ManifestError, import_photos, read_manifest_csv, scan_folder
from similarity.models import duplicate_reason
from similarity.runtime.encoders import EncoderUnavailable
from similarity.search.vectors import get_encoder


class Command(BaseCommand):
    help = (
        "Import the images under PATH as reference photos. Coordinates come from the CSV manifest "
        "(columns file, latitude, longitude, optional title, address, source, license, notes; file relative "
        "to the CSV) or else from each photo's GPS EXIF. Files already in the gallery (same bytes) are skipped, "
        "and so are links to files outside PATH. Vectors exported beside the manifest (vectors/*.npz, "
        "export_gallery --vectors) are checked; the photos are embedded afresh unless --trust-vectors."
    )

    def add_arguments(self, parser):
        parser.add_argument("path", type=Path, help="Folder (searched recursively) or single image file.")
        parser.add_argument("--manifest", type=Path, help="CSV with file, latitude, longitude[, title, address].")
        parser.add_argument(
            "--trust-vectors",
            action="store_true",
            help="Store the exported vectors of the encoder in use instead of embedding the photos again, after a "
            "random sample of them matched fresh embeddings of their images (an export you made yourself).",
        )
        parser.add_argument("--no-progress", action="store_true", help="Do not show a progress bar.")

    def handle(self, *args, path: Path, manifest: Path | None, trust_vectors: bool, no_progress: bool, **options):
        if not path.exists():
            raise CommandError(f"{path} does not exist.")
        try:
            rows = read_manifest_csv(manifest) if manifest else {}
        except ManifestError as exc:
            raise CommandError(str(exc)) from None
        images, outside = scan_folder(path)
        vectors = self.vectors_to_store(manifest, images, trust_vectors)
        if not images:
            raise CommandError(f"No images (.jpg, .jpeg, .png, .webp, .gif, .heic) under {path}.")
        with tqdm(total=len(images), unit="photo", disable=no_progress, file=self.stderr) as bar:
            report = import_photos(images, rows, vectors=vectors, on_progress=bar.update)
        self.stdout.write(
            f"Imported {len(report.imported)}, already present {len(report.duplicates)}, "
            f"skipped {len(report.skipped) + len(outside)}."
        )
        for image_path, existing in report.duplicates:
            self.stdout.write(f"  already present: {image_path}: {duplicate_reason(existing)}")
        for image_path, reason in report.skipped:
            self.stdout.write(f"  skipped: {image_path}: {reason}")
        for link in outside:
            self.stdout.write(f"  skipped: {link}: a link to a file outside {path}; only files inside it are imported")
        waiting = sum(photo.embedding_status == "pending" for photo in report.imported)
        if waiting:
            self.stdout.write(
                f"{waiting} embedding(s) are queued; run `python manage.py build_clip_index` to embed and index now."
            )
        elif report.imported:
            self.stdout.write("Every imported photo came with its vector; `build_clip_index` indexes them.")

    def vectors_to_store(self, manifest: Path | None, images: list[Path], trust: bool) -> dict:
        """The exported vectors to store with their photos (sha256 -> {encoder: vector}): checked, and by default
        none where the encoder can embed the photos afresh."""
        folder = manifest.parent / VECTORS_FOLDER if manifest else None
        if folder is None or not folder.is_dir():
            if trust:
                raise CommandError("--trust-vectors: there is no vectors/ folder beside the manifest.")
            return {}
        try:
            vectors = read_vectors(folder)  # well-formed: finite unit vectors, one dimension per encoder
        except ExchangeError as exc:
            raise CommandError(str(exc)) from None
        try:
            encoder = get_encoder().load()
        except EncoderUnavailable as exc:
            if trust:
                raise CommandError(f"--trust-vectors needs the encoder to check a sample: {exc}") from None
            self.stdout.write(
                f"Vectors for {len(vectors)} photo(s) found in {folder}: checked and stored, as the encoder cannot be "
                "loaded here to embed the photos afresh."
            )
            return vectors
        if not trust:
            self.stdout.write(
                f"Vectors for {len(vectors)} photo(s) found in {folder}: not used, the photos are embedded afresh "
                "(--trust-vectors stores them after a sample check)."
            )
            return {}
        try:
            compared = check_sample(vectors, images, encoder)
        except ExchangeError as exc:
            raise CommandError(str(exc)) from None
        if not compared:
            raise CommandError(f"--trust-vectors: {folder} holds no {encoder.id} vector of these photos to check.")
        kept = {digest: {encoder.id: by[encoder.id]} for digest, by in vectors.items() if encoder.id in by}
        self.stdout.write(
            f"Vectors for {len(kept)} photo(s) found in {folder}: a sample of {compared} matched fresh embeddings; "
            f"stored ({encoder.id} only)."
        )
        return kept
