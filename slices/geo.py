"""Locations and distances: regions, ISO countries, great-circle distance."""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from importlib import resources

import numpy as np
import numpy.typing as npt

EARTH_RADIUS_KM = 6371.0088

REGIONS = ("africa", "asia", "europe", "north-america", "oceania", "south-america")
CONTINENT_TO_REGION = {
    "AF": "africa",
    "AS": "asia",
    "EU": "europe",
    "NA": "north-america",
    "OC": "oceania",
    "SA": "south-america",
}


@lru_cache(maxsize=1)
def iso_countries() -> frozenset[str]:
    text = resources.files("slices").joinpath("data/iso3166-alpha2.txt").read_text()
    return frozenset(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#"))


def is_country(code: object) -> bool:
    return isinstance(code, str) and code in iso_countries()


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in km between two points given in degrees."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp = p2 - p1
    dl = math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


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
