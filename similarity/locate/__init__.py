"""The photo-geolocation pipeline: location sources run in priority order (``pipeline.py``) and the
sources this project ships (``sources.py``: EXIF GPS, similar reference photos).

The pipeline's public names are importable from here.
"""

from similarity.locate.pipeline import (
    ConfiguredSource,
    LocateOutcome,
    LocateQuery,
    Location,
    NoLocation,
    Source,
    SourceReport,
    configured_sources,
    locate,
)

__all__ = [
    "ConfiguredSource",
    "LocateOutcome",
    "LocateQuery",
    "Location",
    "NoLocation",
    "Source",
    "SourceReport",
    "configured_sources",
    "locate",
]
