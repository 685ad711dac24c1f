"""python manage.py export_gallery OUT [--vectors]"""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from similarity.gallery.exchange import ExchangeError, export_gallery


class Command(BaseCommand):
    help = (
        "Write the active reference photos to OUT with a manifest.csv in the format import_photos reads "
        "(file, latitude, longitude, title, address, source, license, notes), and with --vectors the stored "
        "vectors of every encoder, so that `import_photos OUT --manifest OUT/manifest.csv` restores the gallery "
        "elsewhere without embedding it again."
    )

    def add_arguments(self, parser):
        parser.add_argument("out", type=Path, help="A new or empty folder.")
        parser.add_argument("--vectors", action="store_true", help="Also write the stored vectors (vectors/*.npz).")

    def handle(self, *args, out: Path, vectors: bool, **options):
        try:
            report = export_gallery(out, with_vectors=vectors)
        except ExchangeError as exc:
            raise CommandError(str(exc)) from None
        except OSError as exc:
            raise CommandError(f"Cannot write the export to {out}: {exc.strerror or exc}") from None
        self.stdout.write(f"Exported {report.photos} photo(s) to {out} (manifest {out / 'manifest.csv'}).")
        for encoder, count in report.vectors.items():
            self.stdout.write(f"  {count} vector(s) of {encoder}")
        self.stdout.write(f"Restore with: python manage.py import_photos {out} --manifest {out / 'manifest.csv'}")
