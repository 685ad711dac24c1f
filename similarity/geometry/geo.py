"""Coordinates on the sphere: distances and weighted centres."""

import math
from typing import Sequence

EARTH_RADIUS_M = 6_371_008.8


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres."""
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    dphi = phi2 - phi1
    dlambda = math.radians(lon2 - lon1)
    a = math.sin(dphi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(dlambda / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


def weighted_centre(points: Sequence[tuple[float, float]], weights: Sequence[float]) -> tuple[float, float]:
    """Weighted mean position (through 3-D unit vectors, so it is right across the antimeridian)."""
    x = y = z = 0.0
    for (lat, lon), weight in zip(points, weights):
        phi, lam = math.radians(lat), math.radians(lon)
        x += weight * math.cos(phi) * math.cos(lam)
        y += weight * math.cos(phi) * math.sin(lam)
        z += weight * math.sin(phi)
    norm = math.sqrt(x * x + y * y + z * z)
    if norm == 0:
        raise ValueError("the weighted points cancel out; no centre")
    return math.degrees(math.asin(z / norm)), math.degrees(math.atan2(y, x))
