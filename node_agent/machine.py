"""What this node is: its capacity (from the machine unless configured) and its NodeInfo.

Everything here comes from agent.yaml or SLICEMESH_* and ends up on the controller's screens
and in its placement sums, so numbers must be finite and texts printable.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psutil

from slices import geo, units
from slices.errors import SpecError
from slices.model import Capacity, Location, NodeInfo
from slices.spec import NODE_RE
from slices.terminal import find_unprintable

SITE_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
MAX_OVERBOOK = 100.0
MAX_LABEL_CHARS = 200


def measured_capacity(path: str | Path = "/") -> Capacity:
    """The real machine: all cores, all memory, the disk holding ``path``."""
    p = Path(path)
    while not p.exists():
        p = p.parent
    return Capacity(cpu=float(psutil.cpu_count() or 1), memory=psutil.virtual_memory().total, disk=psutil.disk_usage(str(p)).total)


def parse_capacity(doc: Mapping[str, Any], path: str, *, fallback: Capacity | None = None) -> Capacity:
    """``{cpu: 4, memory: 8Gi, disk: 100Gi}``; missing fields come from ``fallback``."""
    allowed = {"cpu", "memory", "disk"}
    for key in doc:
        if key not in allowed:
            raise SpecError(f"{path}.{key}", "unknown key; allowed: cpu, memory, disk")

    def get(key: str, parse: Any, default: float) -> Any:
        if key not in doc:
            if fallback is None:
                return 0
            return default
        if doc[key] in (0, "0"):
            return 0
        try:
            return parse(doc[key])
        except ValueError as exc:
            raise SpecError(f"{path}.{key}", str(exc)) from None

    fb = fallback or Capacity(0, 0, 0)
    return Capacity(cpu=get("cpu", units.parse_cpu, fb.cpu), memory=get("memory", units.parse_bytes, fb.memory), disk=get("disk", units.parse_bytes, fb.disk))


def parse_location(doc: Mapping[str, Any]) -> Location:
    missing = [k for k in ("city", "country", "region", "lat", "lon") if k not in doc]
    if missing:
        raise SpecError("location", f"missing {', '.join(missing)} (set them in agent.yaml)")
    extra = set(doc) - {"city", "country", "region", "lat", "lon"}
    if extra:
        raise SpecError(f"location.{sorted(extra)[0]}", "unknown key")
    country = str(doc["country"]).upper()
    if not geo.is_country(country):
        raise SpecError("location.country", f"{doc['country']!r} is not an ISO 3166 alpha-2 code")
    if doc["region"] not in geo.REGIONS:
        raise SpecError("location.region", f"{doc['region']!r} is not one of {', '.join(geo.REGIONS)}")
    try:
        lat, lon = float(doc["lat"]), float(doc["lon"])
    except (TypeError, ValueError, OverflowError):
        raise SpecError("location", "lat and lon must be numbers") from None
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):  # NaN fails both comparisons, so it is refused here
        raise SpecError("location", "lat must be in [-90, 90] and lon in [-180, 180]")
    city = _printable("location.city", doc["city"])
    return Location(city=city, country=country, region=str(doc["region"]), lat=lat, lon=lon)


def _printable(path: str, value: object) -> str:
    """Text the controller will show: short, not empty, with no control characters."""
    if not isinstance(value, (str, int, float)):
        raise SpecError(path, "must be text or a number")
    text = str(value)
    if not text.strip() or len(text) > MAX_LABEL_CHARS:
        raise SpecError(path, f"must be 1 to {MAX_LABEL_CHARS} characters")
    bad = find_unprintable(text)
    if bad is not None:
        raise SpecError(path, bad)
    return text


def node_info(
    *,
    name: str,
    site: str,
    location: Location,
    capacity: Capacity,
    reserve: Capacity,
    offers: Mapping[str, str],
    images: list[str],
    labels: Mapping[str, Any],
    overbook: float,
    facts: Mapping[str, str] | None = None,
) -> NodeInfo:
    if not NODE_RE.match(name):
        raise SpecError("name", f"{name!r} is not a valid node name (letters, digits, . _ -)")
    if not SITE_RE.match(site):
        raise SpecError("site", f"{site!r} is not a valid site name (lowercase letters, digits, . _ -)")
    if not (0 < overbook <= MAX_OVERBOOK):  # NaN fails the comparison, so it is refused here
        raise SpecError("overbook", f"must be > 0 and at most {MAX_OVERBOOK:g}, got {overbook}")
    return NodeInfo(
        name=name,
        site=site,
        location=location,
        capacity=capacity,
        reserve=reserve,
        offers=dict(offers),
        images=tuple(sorted(set(images))),
        labels={_printable("labels", k): _printable(f"labels.{k}", v) for k, v in labels.items()},
        overbook=overbook,
        facts=dict(facts or {}),
    )
