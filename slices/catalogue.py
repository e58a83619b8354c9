"""Topologies for simulated clusters: the built-in catalogue of research-university sites,
or any CSV with the columns ``site, city, country, continent, lat, lon, machines``
(M-Lab's ``mlab-sites.csv`` loads as it is).
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from slices import geo
from slices.errors import SpecError

REQUIRED = ("site", "city", "country", "continent", "lat", "lon", "machines")
_SITE_CLEAN = re.compile(r"[^a-z0-9._-]+")


@dataclass(frozen=True)
class Site:
    name: str
    city: str
    country: str
    region: str
    lat: float
    lon: float
    machines: int


def parse_topology(text: str, source: str) -> list[Site]:
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
    if missing:
        raise SpecError(source, f"missing column(s): {', '.join(missing)} (need {', '.join(REQUIRED)})")
    sites: list[Site] = []
    seen: set[str] = set()
    for line, row in enumerate(reader, start=2):
        where = f"{source}:{line}"
        name = _SITE_CLEAN.sub("-", (row["site"] or "").strip().lower()).strip("-")
        if not name:
            raise SpecError(where, "empty site name")
        if name in seen:
            raise SpecError(where, f"site {name!r} appears twice")
        seen.add(name)
        country = (row["country"] or "").strip().upper()
        if not geo.is_country(country):
            raise SpecError(where, f"{row['country']!r} is not an ISO 3166 alpha-2 country code")
        continent = (row["continent"] or "").strip().upper()
        if continent not in geo.CONTINENT_TO_REGION:
            raise SpecError(where, f"continent {row['continent']!r} is not one of {', '.join(geo.CONTINENT_TO_REGION)}")
        try:
            lat, lon, machines = float(row["lat"]), float(row["lon"]), int(row["machines"])
        except (TypeError, ValueError):
            raise SpecError(where, "lat, lon must be numbers and machines a whole number") from None
        if not (-90 <= lat <= 90 and -180 <= lon <= 180) or machines < 0:
            raise SpecError(where, "lat/lon out of range or negative machines")
        city = (row["city"] or "").strip() or name
        sites.append(Site(name, city, country, geo.CONTINENT_TO_REGION[continent], lat, lon, machines))
    if not sites:
        raise SpecError(source, "no sites")
    return sites


def load_topology(path: str | Path) -> list[Site]:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise SpecError(str(p), f"cannot read: {exc.strerror}") from None
    return parse_topology(text, str(p))


def builtin_catalogue() -> list[Site]:
    text = resources.files("slices").joinpath("data/sites.csv").read_text()
    return parse_topology(text, "built-in catalogue")


def spread_nodes(sites: list[Site], count: int | None) -> list[tuple[Site, int]]:
    """Pick (site, machine number) pairs.

    With ``count`` None: every machine of every site. Otherwise ``count`` nodes spread round-robin
    over the sites in order, two per site first, so 24 nodes land on the first 12 sites.
    """
    if count is None:
        return [(s, i) for s in sites for i in range(s.machines)]
    per_site = max(2, -(-count // len(sites)))
    return [(s, i) for s in sites for i in range(per_site)][:count]
