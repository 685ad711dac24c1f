"""Location priors: what a caller already knows about where a photo was taken.

A prior is a circle (``near=<lat>,<lon>`` with ``radius_km``) or a box
(``bbox=<south>,<west>,<north>,<east>``; a box whose west edge is east of
its east edge crosses the antimeridian). Searches consider only reference
photos inside every prior they are given. Each prior tests one position or
whole arrays of them at once (:meth:`mask`), and gives a latitude/longitude
box around itself for range queries (:meth:`bounds`). Pure geometry: no
Django here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from similarity.geometry.geo import EARTH_RADIUS_M

MAX_RADIUS_KM = math.pi * EARTH_RADIUS_M / 1000  # half the circumference: the whole globe


class PriorError(ValueError):
    """The prior cannot be used; the message says why."""


@dataclass(frozen=True)
class Box:
    south: float
    west: float
    north: float
    east: float

    def __post_init__(self):
        _check_latitude(self.south, "south")
        _check_latitude(self.north, "north")
        _check_longitude(self.west, "west")
        _check_longitude(self.east, "east")
        if self.south > self.north:
            raise PriorError(f"bbox: south ({self.south}) is north of north ({self.north}).")

    @property
    def crosses_antimeridian(self) -> bool:
        return self.west > self.east

    def mask(self, latitudes, longitudes) -> np.ndarray:
        latitudes, longitudes = np.asarray(latitudes), np.asarray(longitudes)
        inside = (latitudes >= self.south) & (latitudes <= self.north)
        if self.crosses_antimeridian:
            return inside & ((longitudes >= self.west) | (longitudes <= self.east))
        return inside & (longitudes >= self.west) & (longitudes <= self.east)

    def bounds(self) -> "Box":
        return self

    def as_dict(self) -> dict:
        return {"type": "bbox", "south": self.south, "west": self.west, "north": self.north, "east": self.east}


@dataclass(frozen=True)
class Circle:
    latitude: float
    longitude: float
    radius_km: float

    def __post_init__(self):
        _check_latitude(self.latitude, "near")
        _check_longitude(self.longitude, "near")
        if not (math.isfinite(self.radius_km) and 0 < self.radius_km <= MAX_RADIUS_KM):
            raise PriorError(f"radius_km must be more than 0 and at most {MAX_RADIUS_KM:.0f}, not {self.radius_km}.")

    def mask(self, latitudes, longitudes) -> np.ndarray:
        latitudes = np.asarray(latitudes, dtype=np.float64)
        longitudes = np.asarray(longitudes, dtype=np.float64)
        inside = self.bounds().mask(latitudes, longitudes)  # cheap first cut
        if inside.any():
            candidates = np.flatnonzero(inside)
            distances = _haversine_m(self.latitude, self.longitude, latitudes[candidates], longitudes[candidates])
            inside[candidates] = distances <= self.radius_km * 1000
        return inside

    def bounds(self) -> Box:
        """The smallest latitude/longitude box holding the circle."""
        angle = math.degrees(self.radius_km * 1000 / EARTH_RADIUS_M)
        south, north = self.latitude - angle, self.latitude + angle
        if south <= -90 or north >= 90:  # a pole inside: every longitude
            return Box(max(south, -90.0), -180.0, min(north, 90.0), 180.0)
        spread = math.degrees(
            math.asin(min(1.0, math.sin(math.radians(angle)) / math.cos(math.radians(self.latitude))))
        )
        if spread >= 180:
            return Box(south, -180.0, north, 180.0)
        west, east = _wrap(self.longitude - spread), _wrap(self.longitude + spread)
        return Box(south, west, north, east)

    def as_dict(self) -> dict:
        return {"type": "near", "latitude": self.latitude, "longitude": self.longitude, "radius_km": self.radius_km}


Prior = Box | Circle


def inside_all(priors: Sequence[Prior], latitudes, longitudes) -> np.ndarray:
    """Which positions lie inside every prior."""
    inside = np.ones(np.shape(latitudes), dtype=bool)
    for prior in priors:
        inside &= prior.mask(latitudes, longitudes)
    return inside


def contains(priors: Sequence[Prior], latitude: float, longitude: float) -> bool:
    return bool(inside_all(priors, [latitude], [longitude])[0])


def parse(near: str | None = None, radius_km=None, bbox: str | None = None, *, parse_number=float) -> Prior | None:
    """The prior a request describes, or None; PriorError names what is wrong.

    ``parse_number`` reads one number from text (the service passes its strict parser).
    """
    if near and bbox:
        raise PriorError("Give near (with radius_km) or bbox, not both.")
    if bbox:
        return Box(*_numbers(bbox, 4, "bbox", "<south>,<west>,<north>,<east>", parse_number))
    if near:
        if radius_km in (None, ""):
            raise PriorError("near needs radius_km, the radius in kilometres.")
        latitude, longitude = _numbers(near, 2, "near", "<latitude>,<longitude>", parse_number)
        try:
            radius = parse_number(radius_km)
        except ValueError:
            raise PriorError(f"radius_km must be a number, not {radius_km!r}.") from None
        return Circle(latitude, longitude, radius)
    if radius_km not in (None, ""):
        raise PriorError("radius_km needs near=<latitude>,<longitude>.")
    return None


def _numbers(text: str, count: int, name: str, form: str, parse_number) -> list[float]:
    parts = text.split(",")
    if len(parts) != count:
        raise PriorError(f"{name} must be {form}, not {text!r}.")
    try:
        return [parse_number(part.strip()) for part in parts]
    except ValueError:
        raise PriorError(f"{name} must be {form} with plain numbers, not {text!r}.") from None


def _check_latitude(value: float, name: str) -> None:
    if not (math.isfinite(value) and -90 <= value <= 90):
        raise PriorError(f"{name}: latitude {value} is not between -90 and 90.")


def _check_longitude(value: float, name: str) -> None:
    if not (math.isfinite(value) and -180 <= value <= 180):
        raise PriorError(f"{name}: longitude {value} is not between -180 and 180.")


def _wrap(longitude: float) -> float:
    return (longitude + 180.0) % 360.0 - 180.0


def _haversine_m(lat1: float, lon1: float, lat2: np.ndarray, lon2: np.ndarray) -> np.ndarray:
    phi1, phi2 = math.radians(lat1), np.radians(lat2)
    a = np.sin((phi2 - phi1) / 2) ** 2 + math.cos(phi1) * np.cos(phi2) * np.sin(np.radians(lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_M * np.arcsin(np.minimum(1.0, np.sqrt(a)))
