"""Great-circle geometry over many points at once (numpy): unit vectors for dot-product
distances, and each point's nearest other. The controller's; the CLI never imports it."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from slices.geo import EARTH_RADIUS_KM


def unit_vectors(lats: npt.ArrayLike, lons: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Points on the unit sphere: dot products of two are cosines of their central angle."""
    lat = np.radians(np.asarray(lats, dtype=np.float64))
    lon = np.radians(np.asarray(lons, dtype=np.float64))
    return np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=-1).reshape(-1, 3)


def nearest_other_km(points: Sequence[tuple[float, float]], *, block: int = 512) -> list[float | None]:
    """For each (lat, lon), the great-circle distance to the nearest *other* point, in km.

    Slivers share few places (they sit at sites), so the work is over distinct places: a
    place holding two points is 0 km from its nearest other; otherwise the closest other
    place, found by vectorised dot products in blocks (O(places²) without the memory).
    """
    if len(points) < 2:
        return [None] * len(points)
    where: dict[tuple[float, float], int] = {}
    slot = [where.setdefault(p, len(where)) for p in points]
    count = np.bincount(slot, minlength=len(where))
    places = list(where)
    unit = unit_vectors([p[0] for p in places], [p[1] for p in places])
    best = np.empty(len(places))
    for start in range(0, len(places), block):
        dots = unit[start : start + block] @ unit.T
        rows = np.arange(dots.shape[0])
        dots[rows, rows + start] = -2.0  # a place is not its own neighbour ...
        best[start : start + block] = dots.max(axis=1)
    best = np.where(count > 1, 1.0, best)  # ... unless two points share it
    km = np.arccos(np.clip(best, -1.0, 1.0)) * EARTH_RADIUS_KM
    return [float(km[s]) for s in slot]
