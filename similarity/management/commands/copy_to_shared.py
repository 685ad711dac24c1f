"""python manage.py copy_to_shared: move an installation onto services that several machines share.

Copies the local media folder into the bucket GEOLOCATOR_MEDIA_STORAGE names and every stored vector into
the Milvus collection SIMILARITY_VECTOR_BACKEND=milvus uses, then checks the counts. Nothing local is
changed or deleted, and a re-run copies only what is missing (docs/operating.md, "Several machines").
"""

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from similarity import media as stored_files
from similarity.index.milvus import MilvusUnavailable
from similarity.runtime.encoders import EncoderUnavailable
from similarity.search import vector_store
from similarity.search.vectors import get_encoder

SHOWN = 5  # missing names listed in the error line


class Command(BaseCommand):
    help = (
        "Copy the local media folder to the S3 bucket (GEOLOCATOR_MEDIA_STORAGE) and the stored vectors to "
        "Milvus (SIMILARITY_VECTOR_BACKEND=milvus), then verify the counts. With neither --media nor --vectors: both."
    )

    def add_arguments(self, parser):
        parser.add_argument("--media", action="store_true", help="Copy the media files.")
        parser.add_argument("--vectors", action="store_true", help="Copy the vectors of the current encoder.")
        parser.add_argument(
            "--from", dest="source", help="The local media folder (default: <GEOLOCATOR_DATA_DIR>/media)."
        )
        parser.add_argument("--no-progress", action="store_true", help="Do not show a progress bar.")

    def handle(self, *args, media: bool, vectors: bool, source: str | None, no_progress: bool, **options):
        both = not media and not vectors
        if media or both:
            self.copy_media(Path(source) if source else Path(settings.MEDIA_ROOT), no_progress)
        if vectors or both:
            self.copy_vectors()

    def copy_media(self, folder: Path, no_progress: bool) -> None:
        if stored_files.is_local():
            raise CommandError(
                "GEOLOCATOR_MEDIA_STORAGE is local: set it (and the GEOLOCATOR_S3_* settings) to the bucket first."
            )
        if not folder.is_dir():
            raise CommandError(f"{folder} is not a folder: give the local media folder with --from.")
        total = sum(1 for _ in stored_files.files_under(folder))
        with tqdm(total=total, unit="file", disable=no_progress or not total, file=self.stderr) as bar:
            try:
                report = stored_files.copy_folder(folder, on_file=bar.update)
            except Exception as exc:  # the bucket unreachable, refused keys, a file unreadable: one line
                first_line = str(exc).splitlines()[0] if str(exc) else ""
                raise CommandError(f"Copying to the bucket stopped: {type(exc).__name__}: {first_line}") from None
        self.stdout.write(
            f"Media: {report.files} file(s) in {folder}: {len(report.copied)} copied, "
            f"{len(report.already_there)} already in the bucket."
        )
        named, missing = stored_files.missing_files()
        if missing:
            shown = ", ".join(missing[:SHOWN]) + (" ..." if len(missing) > SHOWN else "")
            raise CommandError(f"{len(missing)} of the {named} files the database names are not in the bucket: {shown}")
        self.stdout.write(f"Media: all {named} file(s) the database names are in the bucket.")

    def copy_vectors(self) -> None:
        if not vector_store.uses_milvus():
            raise CommandError(
                "SIMILARITY_VECTOR_BACKEND is faiss: set it to milvus (and SIMILARITY_MILVUS_URI) first."
            )
        try:
            encoder = get_encoder()
            written = vector_store.rebuild(encoder.id)
            stats = vector_store.stats(encoder.id)
        except (MilvusUnavailable, EncoderUnavailable) as exc:
            raise CommandError(str(exc).splitlines()[0]) from None
        if not stats.get("counts_match"):
            raise CommandError(
                f"Milvus holds {stats.get('vectors')} vectors of {encoder.id}, the database {stats['vectors_in_database']}."
            )
        self.stdout.write(f"Vectors: {written} of {encoder.id} written to Milvus; its count matches the database.")
