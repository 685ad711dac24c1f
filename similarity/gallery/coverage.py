"""The gallery on a grid: how many reference photos each map cell holds, for the curators' coverage map.

Cells are Web Mercator tiles (the squares a slippy map shows). Each photo
stores its tile at zoom :data:`TILE_ZOOM` (about 10 m at the equator); the
cell holding it at any coarser zoom is that tile divided by a power of two,
so the database counts photos per cell in one grouped query over an
indexed range, and the browser gets counts, never a million points.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from django.db.models import Count, F

TILE_ZOOM = 22
MAX_LATITUDE = 85.05112878  # where Web Mercator stops
MAX_CELLS = 10_000  # per request: a screen of cells, with room to spare


class CoverageError(ValueError):
    """The request cannot be answered; the message says why."""


def tile_of(latitude: float, longitude: float, zoom: int = TILE_ZOOM) -> tuple[int, int]:
    """The Web Mercator tile (x, y) holding a position at ``zoom``."""
    n = 1 << zoom
    latitude = max(-MAX_LATITUDE, min(MAX_LATITUDE, latitude))
    x = int((longitude + 180.0) / 360.0 * n)
    phi = math.radians(latitude)
    y = int((1.0 - math.log(math.tan(phi) + 1.0 / math.cos(phi)) / math.pi) / 2.0 * n)
    return min(max(x, 0), n - 1), min(max(y, 0), n - 1)


def tile_bounds(zoom: int, x: int, y: int) -> tuple[float, float, float, float]:
    """(south, west, north, east) of a tile."""
    n = 1 << zoom

    def latitude(row: int) -> float:
        return math.degrees(math.atan(math.sinh(math.pi * (1 - 2 * row / n))))

    return latitude(y + 1), x / n * 360.0 - 180.0, latitude(y), (x + 1) / n * 360.0 - 180.0


@dataclass(frozen=True)
class Cell:
    zoom: int
    x: int
    y: int
    count: int

    def as_feature(self) -> dict:
        south, west, north, east = tile_bounds(self.zoom, self.x, self.y)
        ring = [[west, south], [east, south], [east, north], [west, north], [west, south]]
        return {
            "type": "Feature",
            "geometry": {"type": "Polygon", "coordinates": [ring]},
            "properties": {"count": self.count, "zoom": self.zoom, "x": self.x, "y": self.y},
        }


def cell_zoom_for(map_zoom: int) -> int:
    """Cells of a quarter tile's width (64 pixels) at a map zoom."""
    return max(0, min(TILE_ZOOM, map_zoom + 2))


def cells(photos, zoom: int, south: float, west: float, north: float, east: float) -> list[Cell]:
    """Photos per cell at ``zoom`` within a box (west > east crosses the antimeridian), largest first."""
    shift = 1 << (TILE_ZOOM - zoom)
    ranges = _tile_ranges(zoom, south, west, north, east)
    if sum((x1 - x0 + 1) * (y1 - y0 + 1) for (x0, x1), (y0, y1) in ranges) > MAX_CELLS:
        raise CoverageError("That area holds too many cells at this zoom; zoom in or ask for a smaller area.")
    found: list[Cell] = []
    for (x0, x1), (y0, y1) in ranges:
        rows = (
            photos.filter(
                tile_x__gte=x0 * shift, tile_x__lt=(x1 + 1) * shift, tile_y__gte=y0 * shift, tile_y__lt=(y1 + 1) * shift
            )
            .annotate(cell_x=F("tile_x") / shift, cell_y=F("tile_y") / shift)
            .values("cell_x", "cell_y")
            .annotate(count=Count("pk"))
            .order_by()
        )
        found += [Cell(zoom, row["cell_x"], row["cell_y"], row["count"]) for row in rows]
    return sorted(found, key=lambda cell: (-cell.count, cell.x, cell.y))


def in_cell(photos, zoom: int, x: int, y: int):
    """The photos of one cell."""
    n = 1 << zoom
    if not (0 <= zoom <= TILE_ZOOM and 0 <= x < n and 0 <= y < n):
        raise CoverageError(f"There is no cell {x},{y} at zoom {zoom}.")
    shift = 1 << (TILE_ZOOM - zoom)
    return photos.filter(
        tile_x__gte=x * shift, tile_x__lt=(x + 1) * shift, tile_y__gte=y * shift, tile_y__lt=(y + 1) * shift
    )


def _tile_ranges(zoom, south, west, north, east):
    """Tile x and y ranges covering a box; two x ranges when it crosses the antimeridian."""
    (x_west, y_top), (x_east, y_bottom) = tile_of(north, west, zoom), tile_of(south, east, zoom)
    if west <= east:
        return [((x_west, x_east), (y_top, y_bottom))]
    return [((x_west, (1 << zoom) - 1), (y_top, y_bottom)), ((0, x_east), (y_top, y_bottom))]
