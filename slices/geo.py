"""Locations and distances: regions, ISO countries, great-circle distance (pure Python: the
CLI imports it, and numpy alone would add half a second to every command; the vectorised
forms are in ``geovec``)."""

from __future__ import annotations

import math
from functools import lru_cache
from importlib import resources

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
