"""The locate pipeline: ordered sources, each answering with a position or a reason.

A source is any object with a ``name`` and ``locate(query) -> Location``
that raises :class:`NoLocation` (with a reason) when it has no answer. Sources
are listed in ``GEOLOCATOR_SOURCES`` as dotted paths with priorities (lower
runs first), so another team's source (OCR of signs, object detection...)
plugs in without touching this code. The pipeline stops at the first
confident answer unless asked to run every source; a source that raises is
reported as an error and the others still run.
"""

from __future__ import annotations

import io
import logging
import time
from dataclasses import dataclass, field
from functools import cached_property

from django.conf import settings
from django.db import DatabaseError
from django.utils.module_loading import import_string

from similarity.images import GpsPosition, open_image, read_gps

logger = logging.getLogger(__name__)


class NoLocation(Exception):
    """A source has no answer for this photo; ``reason`` says why, ``data`` what it found anyway."""

    def __init__(self, reason: str, data: dict | None = None):
        super().__init__(reason)
        self.reason = reason
        self.data = data


@dataclass(frozen=True)
class Location:
    latitude: float
    longitude: float
    confidence: float  # in [0, 1]
    radius_m: float | None = None
    data: dict = field(default_factory=dict)  # source-specific detail for the report

    def summary(self) -> dict:
        """The position fields every report shares."""
        return {
            "latitude": self.latitude,
            "longitude": self.longitude,
            "confidence": round(float(self.confidence), 4),
            "radius_m": self.radius_m,
        }


class LocateQuery:
    """The uploaded photo, decoded once and shared by every source."""

    def __init__(self, data: bytes, *, draft_size: int | None = None, options: dict | None = None):
        self.data = data
        self.options = options or {}  # per-request knobs, e.g. {"threshold": 0.7, "top_k": 10}
        self._draft_size = draft_size

    @cached_property
    def image(self):
        """Upright RGB PIL image (ImageRejected if it cannot be decoded)."""
        return open_image(io.BytesIO(self.data), draft_size=self._draft_size, lookup=True)

    @cached_property
    def gps(self) -> GpsPosition | None:
        return read_gps(io.BytesIO(self.data))


@dataclass
class SourceReport:
    name: str
    priority: int
    status: str  # "success" | "no_result" | "error" | "skipped"
    detail: str
    result: dict | None
    elapsed_ms: float = 0.0

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "priority": self.priority,
            "status": self.status,
            "detail": self.detail,
            "result": self.result,
            "elapsed_ms": round(self.elapsed_ms, 1),
        }


@dataclass
class LocateOutcome:
    final: dict | None
    sources: list[SourceReport]

    def as_dict(self) -> dict:
        return {"final": self.final, "sources": [report.as_dict() for report in self.sources]}


def configured_sources() -> list[tuple[int, object]]:
    """(priority, source instance) from GEOLOCATOR_SOURCES, lowest priority number first."""
    sources = []
    for entry in settings.GEOLOCATOR_SOURCES:
        source_class = import_string(entry["path"])
        sources.append((int(entry.get("priority", 100)), source_class(**entry.get("options", {}))))
    return sorted(sources, key=lambda item: item[0])


def locate(query: LocateQuery, *, run_all: bool = False, sources=None) -> LocateOutcome:
    """Run the sources in priority order; the first success is the final answer."""
    reports: list[SourceReport] = []
    final = None
    for priority, source in sources if sources is not None else configured_sources():
        name = getattr(source, "name", type(source).__name__)
        if final is not None and not run_all:
            reports.append(SourceReport(name, priority, "skipped", "a higher-priority source already answered", None))
            continue
        started = time.perf_counter()
        try:
            location = source.locate(query)
        except NoLocation as exc:
            report = SourceReport(name, priority, "no_result", exc.reason, exc.data)
        except DatabaseError:
            raise  # the service itself is down: the whole request fails (503), no partial answer
        except Exception as exc:  # one broken source must not break the others
            logger.exception("Locate source %s failed", name)
            # the message may quote paths or hosts of this server: it stays in the log
            report = SourceReport(name, priority, "error", f"{type(exc).__name__} (details in the server log)", None)
        else:
            report = SourceReport(name, priority, "success", "", {**location.summary(), **location.data})
            if final is None:
                final = {"source": name, **location.summary()}
        report.elapsed_ms = (time.perf_counter() - started) * 1000
        reports.append(report)
    return LocateOutcome(final, reports)
