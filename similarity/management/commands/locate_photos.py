"""python manage.py locate_photos PATH... --out results.csv [--out results.geojson] [--write-exif DIR]"""

from __future__ import annotations

import csv
import os
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError, connections
from tqdm import tqdm

from similarity.gallery.images import ACCEPTED_EXTENSIONS
from similarity.gallery.importer import scan_folder
from similarity.geometry import priors
from similarity.locate.batch import (
    CsvResults,
    GeoJsonResults,
    ResultsFileError,
    locate_photo,
    results_file,
    row_for_failure,
)
from similarity.locate.geotag import GeotagError, geotagged_copy
from similarity.models import parse_number


@dataclass(frozen=True)
class PhotoToLocate:
    name: str  # as the results name it: the PATH given, then the file's path inside it
    path: Path
    copy_name: Path  # where its geotagged copy goes, inside --write-exif


def _from_folder(root: Path) -> list[PhotoToLocate]:
    images, _outside = scan_folder(root)  # links to files outside the folder are left out
    folder = root.resolve()
    return [PhotoToLocate(str(root / image.relative_to(folder)), image, image.relative_to(folder)) for image in images]


def _from_list(csv_path: Path) -> list[PhotoToLocate]:
    """The photos a CSV lists in its ``file`` (or ``path``) column, relative to the CSV's folder."""
    with csv_path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        column = next((name for name in ("file", "path") if name in (reader.fieldnames or [])), None)
        if column is None:
            raise CommandError(f"{csv_path}: a list of photos needs a 'file' (or 'path') column.")
        listed = [(row[column] or "").strip() for row in reader]
    photos = []
    for entry in filter(None, listed):
        path = csv_path.parent / entry
        inside = not Path(entry).is_absolute() and ".." not in Path(entry).parts
        photos.append(PhotoToLocate(str(path), path, Path(entry) if inside else Path(path.name)))
    return photos


def photos_to_locate(paths: list[Path]) -> list[PhotoToLocate]:
    """Every photo named by PATHs (folders searched recursively, CSV lists, image files), each once."""
    found: dict[str, PhotoToLocate] = {}
    for path in paths:
        if not path.exists():
            raise CommandError(f"{path} does not exist.")
        if path.is_dir():
            photos = _from_folder(path)
        elif path.suffix.lower() == ".csv":
            photos = _from_list(path)
        elif path.suffix.lower() in ACCEPTED_EXTENSIONS:
            photos = [PhotoToLocate(str(path), path, Path(path.name))]
        else:
            raise CommandError(f"{path}: not a folder, a CSV list or an image ({', '.join(ACCEPTED_EXTENSIONS)}).")
        for photo in photos:
            found.setdefault(photo.name, photo)
    return list(found.values())


class Command(BaseCommand):
    help = (
        "Locate many photos at once with the same sources and settings as /api/locate/, and write one row per "
        "photo (latitude, longitude, radius, confidence, source, method, matched reference ids, or the reason "
        "there is no answer) to CSV and/or GeoJSON. PATHs are folders (searched recursively), image files, or CSV "
        "lists with a 'file' column. A re-run with the same --out skips the photos already written there."
    )

    def add_arguments(self, parser):
        parser.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="Folder, image file or CSV list.")
        parser.add_argument(
            "--out",
            action="append",
            type=Path,
            required=True,
            help="Results file, .csv or .geojson; give it twice for both.",
        )
        parser.add_argument(
            "--write-exif",
            type=Path,
            metavar="DIR",
            help="Write geotagged copies (GPS EXIF added, image data unchanged; JPEG and PNG) of the photos answered "
            "with at least --min-confidence into DIR, keeping their folder structure. Originals are never modified.",
        )
        parser.add_argument("--min-confidence", type=float, default=0.5, help="Confidence a copy needs (default 0.5).")
        parser.add_argument("--top-k", type=int, help="Matches per photo (default SIMILARITY_DEFAULT_TOP_K).")
        parser.add_argument("--threshold", type=float, help="Similarity needed for an answer (default: the encoder's).")
        parser.add_argument(
            "--verify", choices=["all", "first", "off"], help="Geometric verification (default: the setting)."
        )
        parser.add_argument("--near", help="Location prior '<latitude>,<longitude>' (with --radius-km).")
        parser.add_argument("--radius-km", help="Radius of --near, in km.")
        parser.add_argument("--bbox", help="Location prior '<south>,<west>,<north>,<east>'.")
        parser.add_argument(
            "--workers",
            type=int,
            default=os.cpu_count() or 1,
            help="Photos located at once (default: one per core).",
        )
        parser.add_argument("--no-progress", action="store_true", help="Do not show a progress bar.")

    def handle(self, *args, paths, out, write_exif, min_confidence, workers, no_progress, **options):
        if workers < 1:
            raise CommandError("--workers must be at least 1.")
        if not 0 <= min_confidence <= 1:
            raise CommandError("--min-confidence must be between 0 and 1.")
        try:
            prior = priors.parse(options["near"], options["radius_km"], options["bbox"], parse_number=parse_number)
        except priors.PriorError as exc:
            raise CommandError(str(exc)) from None
        try:
            for path in out:
                results_file(path)  # a wrong suffix is refused before any work
        except ResultsFileError as exc:
            raise CommandError(str(exc)) from None
        lookup_options = {key: options[key] for key in ("top_k", "threshold", "verify") if options[key] is not None}
        photos = photos_to_locate(paths)
        if not photos:
            raise CommandError(f"No images ({', '.join(ACCEPTED_EXTENSIONS)}) in {', '.join(map(str, paths))}.")
        copies = Copies(write_exif, min_confidence) if write_exif else None
        if copies is not None:
            copies.refuse_to_overwrite(photos)
        outputs = self.open_outputs(out)
        finished = {row["file"] for row in outputs[0].rows_kept}
        waiting = [photo for photo in photos if photo.name not in finished]
        answered = failed = 0
        try:
            with tqdm(
                total=len(photos),
                initial=len(photos) - len(waiting),
                unit="photo",
                disable=no_progress,
                file=self.stderr,
            ) as bar:
                for photo, row in locate_all(waiting, workers, lookup_options, (prior,) if prior else ()):
                    if copies is not None:
                        copies.write(photo, row)
                    for output in outputs:
                        output.file.add(row)
                    answered += row["latitude"] is not None
                    failed += row["latitude"] is None
                    bar.update()
        except DatabaseError as exc:
            raise CommandError(f"The database is unavailable ({exc}); run the command again to go on.") from None
        finally:
            for output in outputs:
                output.file.close()
        self.stdout.write(
            f"Located {answered} of {len(waiting)} photos ({failed} without an answer); "
            f"{len(photos) - len(waiting)} were already in {', '.join(str(o.file.path) for o in outputs)}."
        )
        if copies is not None:
            self.stdout.write(f"Geotagged copies in {write_exif}: {copies.written} written.")
            for name, reason in copies.refused:
                self.stdout.write(f"  no copy of {name}: {reason}")

    def open_outputs(self, out: list[Path]) -> list[_Output]:
        """The results files, each cut to the photos every one of them has finished (so none is done twice)."""
        outputs = []
        for path in dict.fromkeys(out):
            try:
                file = results_file(path)
                rows = file.load()
            except ResultsFileError as exc:
                raise CommandError(str(exc)) from None
            outputs.append(_Output(file, rows))
        done_everywhere = set.intersection(*({row["file"] for row in output.rows_kept} for output in outputs))
        for output in outputs:
            output.rows_kept = [row for row in output.rows_kept if row["file"] in done_everywhere]
            output.file.start(output.rows_kept)
        return outputs


@dataclass
class _Output:
    file: CsvResults | GeoJsonResults
    rows_kept: list


class Copies:
    """Geotagged copies of the answered photos, under ``folder``."""

    def __init__(self, folder: Path, min_confidence: float):
        self.folder = folder
        self.min_confidence = min_confidence
        self.written = 0
        self.refused: list[tuple[str, str]] = []

    def refuse_to_overwrite(self, photos: list[PhotoToLocate]) -> None:
        """CommandError, before any work, when a copy would land on an original."""
        for photo in photos:
            if (self.folder / photo.copy_name).resolve() == photo.path.resolve():
                raise CommandError(f"--write-exif would overwrite the original {photo.path}: choose another folder.")

    def write(self, photo: PhotoToLocate, row: dict) -> None:
        if row["latitude"] is None or row["confidence"] < self.min_confidence:
            return
        target = self.folder / photo.copy_name
        try:
            copy = geotagged_copy(photo.path.read_bytes(), row["latitude"], row["longitude"])
        except GeotagError as exc:
            self.refused.append((photo.name, str(exc)))
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f".{target.name}.tmp")
        temporary.write_bytes(copy)
        temporary.replace(target)
        self.written += 1


def _locate_one(photo: PhotoToLocate, options: dict, request_priors) -> dict:
    try:
        data = photo.path.read_bytes()
    except OSError as exc:
        return row_for_failure(photo.name, f"Cannot read the file: {exc.strerror or exc}.")
    try:
        return locate_photo(photo.name, data, options=options, priors=request_priors)
    finally:
        if threading.current_thread() is not threading.main_thread():
            connections.close_all()  # this pool thread's connections, which nothing else would close


def locate_all(photos: list[PhotoToLocate], workers: int, options: dict, request_priors):
    """(photo, row) in the order given, ``workers`` photos in flight at once (the model, the index and
    OpenCV release the GIL, so threads keep every core busy)."""
    if workers == 1:
        for photo in photos:
            yield photo, _locate_one(photo, options, request_priors)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="locate-photos") as pool:
        in_flight: deque[tuple[PhotoToLocate, Future]] = deque()
        queue = iter(photos)
        for photo in queue:
            in_flight.append((photo, pool.submit(_locate_one, photo, options, request_priors)))
            if len(in_flight) >= 2 * workers:
                done, future = in_flight.popleft()
                yield done, future.result()
        while in_flight:
            done, future = in_flight.popleft()
            yield done, future.result()
