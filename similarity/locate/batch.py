"""Many photos located at once: one result row per photo, and the CSV and GeoJSON files they are written to.

``locate_photo`` runs the locate pipeline (the same sources and settings as
``/api/locate/``) on one photo's bytes and answers a row (``COLUMNS``). The
``locate_photos`` command and the batch tasks (``similarity/batches.py``) both
use it, so a photo gets the same answer whichever way it comes. The result
files are resumable: ``CsvResults`` and ``GeoJsonResults`` read back what an
earlier, interrupted run wrote, so it is not done again.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from django.conf import settings

from similarity.gallery.exchange import neutralize_cell, restore_cell
from similarity.gallery.images import ImageRejected, format_size
from similarity.locate.pipeline import LocateOutcome, locate
from similarity.locate.sources import decoded_query

COLUMNS = [
    "file",
    "latitude",
    "longitude",
    "radius_m",
    "confidence",
    "source",
    "method",
    "matched_ids",
    "reason",
]
NUMBER_COLUMNS = ("latitude", "longitude", "radius_m", "confidence")


def row_from_outcome(name: str, outcome: LocateOutcome) -> dict:
    """The row of a located photo: the final answer, or why there is none."""
    reports = outcome.sources
    matched: list[dict] = next(
        (report.result["matches"] for report in reports if report.result and "matches" in report.result), []
    )
    row: dict = {column: None for column in COLUMNS}
    row.update(file=name, matched_ids=[match["id"] for match in matched])
    final = outcome.final
    if final is None:
        row["reason"] = "; ".join(f"{report.name}: {report.detail}" for report in reports if report.detail)
        return row
    answering = next(report for report in reports if report.name == final["source"])
    row.update(
        latitude=final["latitude"],
        longitude=final["longitude"],
        radius_m=final["radius_m"],
        confidence=final["confidence"],
        source=final["source"],
        method=(answering.result or {}).get("method") or final["source"],
    )
    return row


def row_for_failure(name: str, reason: str) -> dict:
    """The row of a photo that could not be located at all (not an image, too large...)."""
    return {**{column: None for column in COLUMNS}, "file": name, "matched_ids": [], "reason": reason}


def locate_photo(name: str, data: bytes, *, options: dict | None = None, priors=()) -> dict:
    """Locate one photo's bytes as ``/api/locate/`` does; its row (a reason in it when there is no answer)."""
    limit = settings.SIMILARITY_MAX_UPLOAD_BYTES
    if not data:
        return row_for_failure(name, "The file is empty.")
    if len(data) > limit:
        return row_for_failure(name, f"The file is {format_size(len(data))}; at most {format_size(limit)} is accepted.")
    try:
        query = decoded_query(data, options=options, priors=priors)
    except ImageRejected as exc:  # as the API answers 400, the row says why
        return row_for_failure(name, str(exc))
    return row_from_outcome(name, locate(query))


# --- result files ---------------------------------------------------------------------------------------------


def _csv_cell(column: str, value) -> str:
    if value is None:
        return ""
    if column == "matched_ids":
        return " ".join(str(photo_id) for photo_id in value)
    if column in NUMBER_COLUMNS:
        return repr(float(value))
    return neutralize_cell(str(value))


def csv_text(rows: Iterable[dict], *, header: bool = True) -> str:
    """Rows as CSV (text that a spreadsheet would run as a formula starts with an apostrophe)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if header:
        writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow([_csv_cell(column, row.get(column)) for column in COLUMNS])
    return buffer.getvalue()


def _row_from_csv(record: list[str]) -> dict:
    row: dict = dict(zip(COLUMNS, record, strict=True))
    for column in NUMBER_COLUMNS:
        row[column] = float(row[column]) if row[column] else None
    row["matched_ids"] = [int(part) for part in row["matched_ids"].split()]
    row["file"] = restore_cell(row["file"])
    for column in ("source", "method", "reason"):
        row[column] = restore_cell(row[column]) or None
    return row


def geojson(rows: Iterable[dict]) -> dict:
    """Rows as a GeoJSON FeatureCollection: a Point per answered photo, no geometry for the others."""
    features = []
    for row in rows:
        answered = row.get("latitude") is not None
        geometry = {"type": "Point", "coordinates": [row["longitude"], row["latitude"]]} if answered else None
        properties = {column: row.get(column) for column in COLUMNS if column not in ("latitude", "longitude")}
        features.append({"type": "Feature", "geometry": geometry, "properties": properties})
    return {"type": "FeatureCollection", "features": features}


def _row_from_feature(feature: dict) -> dict:
    properties = feature["properties"]
    row = {column: properties.get(column) for column in COLUMNS}
    point = feature.get("geometry")
    row["longitude"], row["latitude"] = point["coordinates"] if point else (None, None)
    row["matched_ids"] = list(row["matched_ids"] or [])
    return row


class ResultsFileError(Exception):
    """An output file that is not one this module wrote; the message names it."""


def _replace_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in its folder: a reader sees the old file or the new."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


class CsvResults:
    """A CSV results file: a row appended (and flushed) per photo as it is done."""

    def __init__(self, path: Path):
        self.path = path
        self._handle: io.TextIOWrapper | None = None

    def load(self) -> list[dict]:
        """The complete rows already in the file (a row cut off by a kill is dropped)."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            return []
        text = self.path.read_text(encoding="utf-8")
        records = list(csv.reader(io.StringIO(text)))
        if not records or records[0] != COLUMNS:
            raise ResultsFileError(
                f"{self.path} is not a locate_photos CSV (its header differs): choose another --out."
            )
        body = records[1:]
        if body and not text.endswith("\n"):
            body = body[:-1]  # the last row was being written when the run stopped
        try:
            return [_row_from_csv(record) for record in body]
        except ValueError as exc:
            raise ResultsFileError(f"{self.path} has a row that is not a locate_photos result: {exc}") from None

    def start(self, kept: list[dict]) -> None:
        """Rewrite the file with ``kept`` only, then append from there."""
        _replace_atomically(self.path, csv_text(kept))
        self._handle = self.path.open("a", encoding="utf-8", newline="")

    def add(self, row: dict) -> None:
        assert self._handle is not None, "start() first"
        self._handle.write(csv_text([row], header=False))
        self._handle.flush()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


class GeoJsonResults:
    """A GeoJSON results file: rewritten whole (atomically) every ``every`` photos and at the end."""

    def __init__(self, path: Path, every: int = 10):
        self.path = path
        self.every = every
        self.rows: list[dict] = []
        self._unwritten = 0

    def load(self) -> list[dict]:
        if not self.path.exists() or self.path.stat().st_size == 0:
            return []
        try:
            collection = json.loads(self.path.read_text(encoding="utf-8"))
            if collection.get("type") != "FeatureCollection":
                raise ValueError("not a FeatureCollection")
            return [_row_from_feature(feature) for feature in collection["features"]]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ResultsFileError(
                f"{self.path} is not a locate_photos GeoJSON ({exc}): choose another --out."
            ) from None

    def start(self, kept: list[dict]) -> None:
        self.rows = list(kept)
        self._write()

    def add(self, row: dict) -> None:
        self.rows.append(row)
        self._unwritten += 1
        if self._unwritten >= self.every:
            self._write()

    def close(self) -> None:
        if self._unwritten:
            self._write()

    def _write(self) -> None:
        _replace_atomically(self.path, json.dumps(geojson(self.rows), ensure_ascii=False) + "\n")
        self._unwritten = 0


def results_file(path: Path) -> CsvResults | GeoJsonResults:
    """The results file for ``path``, by its suffix (.csv, .geojson or .json)."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return CsvResults(path)
    if suffix in (".geojson", ".json"):
        return GeoJsonResults(path)
    raise ResultsFileError(f"{path}: the output must end in .csv or .geojson.")
