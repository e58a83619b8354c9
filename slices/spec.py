"""The slice spec: YAML -> a validated, typed model.

Every problem is reported with the path of the field and the reason
(``placement.locations[2].within_km: must be > 0``); unknown keys are errors so that a typo
never passes silently. All problems in a document are collected and reported together.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from slices import geo, units
from slices.errors import SpecError
from slices.isolation import ISOLATIONS
from slices.yamlio import load_yaml

NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
OWNER_RE = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")
IMAGE_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
NODE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

DISTINCT = ("site", "city", "country", "region", "none")
SPREAD = ("site", "city", "country", "region")
SELECTORS = ("site", "city", "country", "region", "near")

DEFAULT_LIFETIME = 14 * 86400
MAX_LIFETIME = 56 * 86400
DEFAULT_CPU = 0.25
DEFAULT_MEMORY = 256 * 1024**2
MAX_COUNT = 100_000


class SpecErrors(SpecError):
    """Several field errors at once; ``errors`` keeps each (path, reason)."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        self.errors = errors
        super().__init__("", "; ".join(f"{p}: {r}" if p else r for p, r in errors))


@dataclass(frozen=True)
class Resources:
    cpu: float
    memory: int
    disk: int | None = None
    bandwidth: int | None = None


@dataclass(frozen=True)
class LocationRequest:
    """One entry of ``placement.locations``; ``kind`` is a selector or ``any`` (the remainder)."""

    kind: str
    value: str | None = None
    lat: float | None = None
    lon: float | None = None
    within_km: float | None = None
    count: int = 1

    def describe(self) -> str:
        if self.kind == "any":
            return "anywhere"
        if self.kind == "near":
            return f"near ({self.lat:g}, {self.lon:g}) within {self.within_km:g} km"
        return f"{self.kind} {self.value}"


@dataclass(frozen=True)
class Exclusions:
    sites: frozenset[str] = frozenset()
    countries: frozenset[str] = frozenset()
    nodes: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Placement:
    count: int
    distinct: str = "site"
    locations: tuple[LocationRequest, ...] = ()
    exclude: Exclusions = Exclusions()
    min_distance_km: float | None = None
    spread: str | None = None
    min_count: int | None = None

    def requests(self) -> tuple[LocationRequest, ...]:
        """The location requests plus an ``any`` request for slivers no location asks for."""
        asked = sum(loc.count for loc in self.locations)
        if self.count > asked:
            return (*self.locations, LocationRequest(kind="any", count=self.count - asked))
        return self.locations


@dataclass(frozen=True)
class SliceSpec:
    name: str
    description: str
    resources: Resources
    placement: Placement
    owner: str | None = None
    lifetime: int = DEFAULT_LIFETIME
    isolation: str = "container"
    image: str = "busybox"
    command: tuple[str, ...] | None = None
    env: Mapping[str, str] = field(default_factory=dict)


class _Checker:
    """Collects (path, reason) pairs while walking a document."""

    def __init__(self) -> None:
        self.errors: list[tuple[str, str]] = []

    def fail(self, path: str, reason: str) -> None:
        self.errors.append((path, reason))

    def mapping(self, doc: object, path: str, allowed: tuple[str, ...], required: tuple[str, ...] = ()) -> dict[str, Any]:
        if not isinstance(doc, Mapping):
            self.fail(path, f"must be a mapping, got {_kind(doc)}")
            return {}
        out: dict[str, Any] = {}
        for key, value in doc.items():
            if key not in allowed:
                hint = _closest(str(key), allowed)
                self.fail(_join(path, str(key)), "unknown key" + (f" (did you mean {hint!r}?)" if hint else f"; allowed: {', '.join(allowed)}"))
            else:
                out[key] = value
        for key in required:
            if key not in doc:
                self.fail(_join(path, key), "required")
        return out

    def convert(self, path: str, value: object, parse: Callable[[object], Any]) -> Any:
        try:
            return parse(value)
        except ValueError as exc:
            self.fail(path, str(exc))
            return None

    def string(self, path: str, value: object, pattern: re.Pattern[str] | None = None, what: str = "") -> str | None:
        if not isinstance(value, str):
            self.fail(path, f"must be a string, got {_kind(value)}")
            return None
        if pattern is not None and not pattern.match(value):
            self.fail(path, f"{value!r} is not a valid {what or 'value'} (must match {pattern.pattern})")
            return None
        return value

    def choice(self, path: str, value: object, choices: tuple[str, ...]) -> str | None:
        if value not in choices:
            self.fail(path, f"{value!r} is not one of: {', '.join(choices)}")
            return None
        return str(value)

    def integer(self, path: str, value: object, low: int, high: int) -> int | None:
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(path, f"must be a whole number, got {_kind(value)}")
            return None
        if not low <= value <= high:
            self.fail(path, f"must be between {low} and {high}, got {value}")
            return None
        return value

    def number(self, path: str, value: object, low: float, high: float, *, open_low: bool = False) -> float | None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(path, f"must be a number, got {_kind(value)}")
            return None
        if (value <= low if open_low else value < low) or value > high:
            self.fail(path, f"must be {'>' if open_low else '>='} {low:g}" + (f" and <= {high:g}" if high != float("inf") else "") + f", got {value:g}")
            return None
        return float(value)

    def country(self, path: str, value: object) -> str | None:
        code = value.upper() if isinstance(value, str) else value
        if not geo.is_country(code):
            self.fail(path, f"{value!r} is not an ISO 3166 alpha-2 country code (e.g. US, JP, DE)")
            return None
        return str(code)


def _kind(value: object) -> str:
    if value is None:
        return "nothing"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "a number", float: "a number"}.get(type(value), type(value).__name__)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _closest(word: str, options: tuple[str, ...]) -> str | None:
    import difflib

    match = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return match[0] if match else None


def parse_spec(doc: object, *, default_owner: str | None = None) -> SliceSpec:
    """Validate a decoded YAML document; raise ``SpecErrors`` listing every problem."""
    c = _Checker()
    top = c.mapping(
        doc,
        "",
        ("name", "description", "owner", "lifetime", "isolation", "image", "command", "env", "resources", "placement"),
        ("name", "description"),
    )
    name = c.string("name", top["name"], NAME_RE, "slice name") if "name" in top else None
    description = None
    if "description" in top:
        description = c.string("description", top["description"])
        if description is not None and not description.strip():
            c.fail("description", "must not be empty")
    owner = c.string("owner", top["owner"], OWNER_RE, "owner") if "owner" in top else default_owner
    lifetime = DEFAULT_LIFETIME
    if "lifetime" in top:
        lifetime = c.convert("lifetime", top["lifetime"], units.parse_duration) or DEFAULT_LIFETIME
        if lifetime > MAX_LIFETIME:
            c.fail("lifetime", f"{top['lifetime']} is longer than the 56d maximum")
    isolation = c.choice("isolation", top.get("isolation", "container"), ISOLATIONS) or "container"
    image = c.string("image", top.get("image", "busybox"), IMAGE_RE, "image name") or "busybox"
    command = _parse_command(c, top["command"]) if "command" in top else None
    env = _parse_env(c, top["env"]) if "env" in top else {}
    resources = _parse_resources(c, top.get("resources", {}))
    placement = _parse_placement(c, top.get("placement", {}))
    if c.errors:
        raise SpecErrors(c.errors)
    assert name is not None and description is not None and resources is not None and placement is not None
    return SliceSpec(
        name=name,
        description=description,
        owner=owner,
        lifetime=lifetime,
        isolation=isolation,
        image=image,
        command=command,
        env=env,
        resources=resources,
        placement=placement,
    )


def _parse_command(c: _Checker, value: object) -> tuple[str, ...] | None:
    if isinstance(value, str):
        value = ["sh", "-c", value]
    if not isinstance(value, list) or not value:
        c.fail("command", "must be a non-empty list of strings (or one shell string)")
        return None
    for i, arg in enumerate(value):
        if not isinstance(arg, (str, int, float)) or isinstance(arg, bool):
            c.fail(f"command[{i}]", f"must be a string, got {_kind(arg)}")
            return None
    return tuple(str(a) for a in value)


def _parse_env(c: _Checker, value: object) -> dict[str, str]:
    if not isinstance(value, Mapping):
        c.fail("env", f"must be a mapping of names to strings, got {_kind(value)}")
        return {}
    env: dict[str, str] = {}
    for key, val in value.items():
        if not isinstance(key, str) or not ENV_KEY_RE.match(key):
            c.fail(f"env.{key}", "is not a valid environment variable name")
        elif isinstance(val, (Mapping, list)) or val is None:
            c.fail(f"env.{key}", f"must be a string, got {_kind(val)}")
        else:
            env[key] = str(val).lower() if isinstance(val, bool) else str(val)
    return env


def _parse_resources(c: _Checker, value: object) -> Resources | None:
    res = c.mapping(value, "resources", ("cpu", "memory", "disk", "bandwidth"))
    cpu = c.convert("resources.cpu", res["cpu"], units.parse_cpu) if "cpu" in res else DEFAULT_CPU
    memory = c.convert("resources.memory", res["memory"], units.parse_bytes) if "memory" in res else DEFAULT_MEMORY
    disk = c.convert("resources.disk", res["disk"], units.parse_bytes) if "disk" in res else None
    bandwidth = c.convert("resources.bandwidth", res["bandwidth"], units.parse_bandwidth) if "bandwidth" in res else None
    if memory is not None and memory < 4 * 1024**2:
        c.fail("resources.memory", "must be at least 4Mi")
    if cpu is None or memory is None:
        return None
    return Resources(cpu=cpu, memory=memory, disk=disk, bandwidth=bandwidth)


def _parse_location(c: _Checker, value: object, path: str) -> LocationRequest | None:
    loc = c.mapping(value, path, (*SELECTORS, "within_km", "count"))
    chosen = [k for k in SELECTORS if k in loc]
    if len(chosen) != 1:
        if isinstance(value, Mapping):
            c.fail(path, "needs exactly one of: " + ", ".join(SELECTORS) + (f" (got {', '.join(chosen)})" if chosen else ""))
        return None
    kind = chosen[0]
    count = c.integer(f"{path}.count", loc.get("count", 1), 1, MAX_COUNT)
    if "within_km" in loc and kind != "near":
        c.fail(f"{path}.within_km", "only goes with near")
    if kind == "near":
        near = c.mapping(loc["near"], f"{path}.near", ("lat", "lon"), ("lat", "lon"))
        lat = c.number(f"{path}.near.lat", near["lat"], -90, 90) if "lat" in near else None
        lon = c.number(f"{path}.near.lon", near["lon"], -180, 180) if "lon" in near else None
        if "within_km" not in loc:
            c.fail(f"{path}.within_km", "required with near")
            return None
        within = c.number(f"{path}.within_km", loc["within_km"], 0, 20_100, open_low=True)
        if lat is None or lon is None or within is None or count is None:
            return None
        return LocationRequest(kind="near", lat=lat, lon=lon, within_km=within, count=count)
    raw = loc[kind]
    if kind == "country":
        val = c.country(f"{path}.country", raw)
    elif kind == "region":
        val = c.choice(f"{path}.region", raw, geo.REGIONS)
    else:
        val = c.string(f"{path}.{kind}", raw)
        if val is not None and not val.strip():
            c.fail(f"{path}.{kind}", "must not be empty")
            val = None
    if val is None or count is None:
        return None
    return LocationRequest(kind=kind, value=val, count=count)


def _parse_names(c: _Checker, value: object, path: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        c.fail(path, f"must be a list, got {_kind(value)}")
        return []
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item:
            c.fail(f"{path}[{i}]", f"must be a name, got {_kind(item)}")
        else:
            out.append(item)
    return out


def _parse_placement(c: _Checker, value: object) -> Placement | None:
    pl = c.mapping(value, "placement", ("count", "distinct", "locations", "exclude", "min_distance_km", "spread", "min_count"))
    locations: list[LocationRequest] = []
    raw_locs = pl.get("locations", [])
    if raw_locs is None:
        raw_locs = []
    if not isinstance(raw_locs, list):
        c.fail("placement.locations", f"must be a list, got {_kind(raw_locs)}")
        raw_locs = []
    for i, raw in enumerate(raw_locs):
        loc = _parse_location(c, raw, f"placement.locations[{i}]")
        if loc is not None:
            locations.append(loc)
    asked = sum(loc.count for loc in locations)
    if "count" in pl:
        count = c.integer("placement.count", pl["count"], 1, MAX_COUNT)
        if count is not None and len(locations) == len(raw_locs) and count < asked:
            c.fail("placement.count", f"{count} is less than the {asked} slivers the locations ask for")
    else:
        count = asked or 1
    distinct = c.choice("placement.distinct", pl.get("distinct", "site"), DISTINCT) or "site"
    spread = c.choice("placement.spread", pl["spread"], SPREAD) if pl.get("spread") is not None else None
    min_distance = None
    if pl.get("min_distance_km") is not None:
        min_distance = c.number("placement.min_distance_km", pl["min_distance_km"], 0, 20_100)
    min_count = None
    if pl.get("min_count") is not None:
        min_count = c.integer("placement.min_count", pl["min_count"], 1, MAX_COUNT)
        if min_count is not None and count is not None and min_count > count:
            c.fail("placement.min_count", f"{min_count} is more than placement.count ({count})")
    exclude = Exclusions()
    if pl.get("exclude") is not None:
        ex = c.mapping(pl["exclude"], "placement.exclude", ("sites", "countries", "nodes"))
        countries = []
        for i, code in enumerate(_parse_names(c, ex.get("countries"), "placement.exclude.countries")):
            checked = c.country(f"placement.exclude.countries[{i}]", code)
            if checked:
                countries.append(checked)
        exclude = Exclusions(
            sites=frozenset(_parse_names(c, ex.get("sites"), "placement.exclude.sites")),
            countries=frozenset(countries),
            nodes=frozenset(_parse_names(c, ex.get("nodes"), "placement.exclude.nodes")),
        )
    if count is None:
        return None
    return Placement(
        count=count,
        distinct=distinct,
        locations=tuple(locations),
        exclude=exclude,
        min_distance_km=min_distance or None,
        spread=spread,
        min_count=min_count,
    )


def load_spec_text(text: str, source: str = "<spec>", *, default_owner: str | None = None) -> SliceSpec:
    return parse_spec(load_yaml(text, source), default_owner=default_owner)
