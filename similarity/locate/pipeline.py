"""The locate pipeline: ordered sources, each answering with a position or a reason.

A source is any object with a ``name`` and ``locate(query) -> Location``
that raises :class:`NoLocation` (with a reason) when it has no answer. Sources
are listed in ``GEOLOCATOR_SOURCES`` as dotted paths with priorities (lower
runs first), so another team's source (OCR of signs, object detection...)
plugs in without touching this code. The pipeline stops at the first answer
unless asked to run every source; a source that raises is reported as an
error and the others still run.

An answer less precise than its source's ``final_within_m`` (default
GEOLOCATOR_FINAL_WITHIN_M) is *coarse* (a city from an OCR source, say): it
does not end the pipeline but becomes a location prior (``query.priors``) of
the sources after it, which search only inside it. With no precise answer,
the tightest coarse one is the final answer. A request may bring a prior of
its own.
"""

from __future__ import annotations

import io
import logging
import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import Protocol

from django.conf import settings
from django.db import DatabaseError
from django.utils.module_loading import import_string

from similarity.gallery.images import GpsPosition, open_image, read_gps
from similarity.geometry.priors import Circle

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

    def __init__(self, data: bytes, *, draft_size: int | None = None, options: dict | None = None, priors=()):
        self.data = data
        self.options = options or {}  # per-request knobs, e.g. {"threshold": 0.7, "top_k": 10}
        self._draft_size = draft_size
        self.request_priors = tuple(priors)
        self.priors = list(priors)  # the request's, then each coarse answer's: sources search inside all

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
    status: str  # "success" | "coarse" | "no_result" | "error" | "skipped"
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
    prior: dict | None = None  # the request's own prior, if it brought one

    def as_dict(self) -> dict:
        return {"final": self.final, "prior": self.prior, "sources": [report.as_dict() for report in self.sources]}


class Source(Protocol):
    """What GEOLOCATOR_SOURCES names: anything with a ``locate`` that answers or raises NoLocation."""

    def locate(self, query: LocateQuery) -> Location: ...


@dataclass(frozen=True)
class ConfiguredSource:
    priority: int
    source: Source
    final_within_m: float  # an answer less precise than this is coarse: a prior for the later sources


def configured_sources() -> list[ConfiguredSource]:
    """The sources of GEOLOCATOR_SOURCES, lowest priority number first."""
    sources = []
    for entry in settings.GEOLOCATOR_SOURCES:
        source_class = import_string(entry["path"])
        sources.append(
            ConfiguredSource(
                int(entry.get("priority", 100)),
                source_class(**entry.get("options", {})),
                float(entry.get("final_within_m", settings.GEOLOCATOR_FINAL_WITHIN_M)),
            )
        )
    return sorted(sources, key=lambda configured: configured.priority)


def locate(query: LocateQuery, *, run_all: bool = False, sources=None) -> LocateOutcome:
    """Run the sources in priority order; the first precise answer is the final one."""
    reports: list[SourceReport] = []
    final = None
    coarse_answers: list[dict] = []
    for configured in sources if sources is not None else configured_sources():
        priority, source = configured.priority, configured.source
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
            result = {**location.summary(), **location.data}
            if location.radius_m is not None and location.radius_m > configured.final_within_m:
                query.priors.append(Circle(location.latitude, location.longitude, location.radius_m / 1000))
                detail = f"a coarse answer (within {location.radius_m:,.0f} m): the sources after it search inside it"
                report = SourceReport(name, priority, "coarse", detail, result)
                coarse_answers.append({"source": name, **location.summary(), "coarse": True})
            else:
                report = SourceReport(name, priority, "success", "", result)
                if final is None:
                    final = {"source": name, **location.summary()}
        report.elapsed_ms = (time.perf_counter() - started) * 1000
        reports.append(report)
    if final is None and coarse_answers:
        final = min(coarse_answers, key=lambda answer: answer["radius_m"])
    prior = query.request_priors[0].as_dict() if query.request_priors else None
    return LocateOutcome(final, reports, prior)
