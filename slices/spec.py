"""The slice spec: YAML -> a validated, typed model.

Every problem is reported with the path of the field and the reason
(``placement.locations[2].within_km: must be > 0``); unknown keys are errors so that a typo
never passes silently. All problems in a document are collected and reported together.
Every number and size is bounded (slices/limits.py, docs/spec.md), so a spec that parses can
be encoded, stored, sent to its nodes and set in their kernels.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial

from slices import geo, units
from slices.checker import Checker, kind
from slices.errors import SpecError
from slices.limits import (
    MAX_BANDWIDTH,
    MAX_COMMAND_ARGS,
    MAX_COMMAND_BYTES,
    MAX_CPU,
    MAX_DESCRIPTION_CHARS,
    MAX_DISK,
    MAX_ENV_BYTES,
    MAX_ENV_VARS,
    MAX_EXCLUDE_NAMES,
    MAX_KM,
    MAX_LOCATIONS,
    MAX_MEMORY,
    MAX_NAME_CHARS,
    MAX_REPORTED,
    MIN_CPU,
    MIN_DISK,
    MIN_MEMORY,
    check_document,
    human_bytes,
)
from slices.limits import MAX_COUNT as MAX_COUNT  # re-exported: the controller and tests read them here
from slices.limits import MAX_LIFETIME as MAX_LIFETIME
from slices.model import ISOLATIONS, CodeRef, Resources, RestartPolicy, SliverSpec
from slices.policy import parse_code, parse_network, parse_on_node_failure, parse_restart
from slices.yamlio import load_yaml

NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
OWNER_RE = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")
IMAGE_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
NODE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

DISTINCT = ("site", "city", "country", "region", "none")
SPREAD = ("site", "city", "country", "region", "none")  # absent: spread geographically (controller/solver.py)
SELECTORS = ("site", "city", "country", "region", "near")

DEFAULT_LIFETIME = 14 * 86400
DEFAULT_CPU = 0.25
DEFAULT_MEMORY = 256 * 1024**2
DEFAULT_DISK = 1024**3


class SpecErrors(SpecError):
    """Several field errors at once; ``errors`` keeps each (path, reason)."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        self.errors = errors
        shown = [f"{p}: {r}" if p else r for p, r in errors[:MAX_REPORTED]]
        if len(errors) > MAX_REPORTED:
            shown.append(f"and {len(errors) - MAX_REPORTED} more problems")
        super().__init__("", "; ".join(shown))


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
        return self._requests

    @functools.cached_property
    def _requests(self) -> tuple[LocationRequest, ...]:  # asked once per sliver by views: kept
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
    #: Environment variables whose values are never shown back, logged or put in a view.
    secrets: Mapping[str, str] = field(default_factory=dict)
    on_node_failure: str = "replace"  # or "keep": wait for a failed node to come back
    restart: RestartPolicy = field(default_factory=RestartPolicy)
    #: ``network.open_to_slices``: its slivers and those of other open slices reach each other.
    open_to_slices: bool = False
    #: ``code``: its bundle (after the CLI uploaded it), or the local path still to upload.
    code: CodeRef | None = None
    code_path: str | None = None

    def sliver(self, sliver_id: str) -> SliverSpec:
        """One sliver of this slice, as the controller sends it to a node."""
        return SliverSpec(
            id=sliver_id,
            slice=self.name,
            isolation=self.isolation,
            image=self.image,
            resources=self.resources,
            command=self.command,
            env={**self.env, **self.secrets},
            restart=self.restart,
            code=self.code,
        )


def parse_spec(doc: object, *, default_owner: str | None = None) -> SliceSpec:
    """Validate a decoded document (from YAML, the wire or the store); raise ``SpecErrors``.

    The document is first checked whole (nesting, size, values the wire cannot carry) so
    that no field check ever meets a cycle, a 5000-digit number or 50 MB of text.
    """
    unsafe = check_document(doc)
    if unsafe:
        raise SpecErrors(unsafe)
    c = Checker()
    top = c.mapping(
        doc,
        "",
        ("name", "description", "owner", "lifetime", "isolation", "image", "command", "env", "secrets", "on_node_failure", "restart", "network", "resources", "placement", "code"),
        ("name", "description"),
    )
    name = c.string("name", top["name"], NAME_RE, "slice name") if "name" in top else None
    description = c.text("description", top["description"], MAX_DESCRIPTION_CHARS) if "description" in top else None
    owner = c.string("owner", top["owner"], OWNER_RE, "owner") if "owner" in top else default_owner
    lifetime = DEFAULT_LIFETIME
    if "lifetime" in top:
        lifetime = c.convert("lifetime", top["lifetime"], partial(units.parse_duration, maximum=MAX_LIFETIME)) or DEFAULT_LIFETIME
    isolation = c.choice("isolation", top.get("isolation", "container"), ISOLATIONS) or "container"
    image = c.string("image", top.get("image", "busybox"), IMAGE_RE, "image name") or "busybox"
    command = _parse_command(c, top["command"]) if "command" in top else None
    env = _parse_env(c, top["env"], "env") if "env" in top else {}
    secrets = _parse_env(c, top["secrets"], "secrets") if "secrets" in top else {}
    for key in sorted(set(env) & set(secrets)):
        c.fail(f"secrets.{key}", "is also in env: name it once")
    on_node_failure = parse_on_node_failure(c, top.get("on_node_failure", "replace"))
    restart = parse_restart(c, top["restart"]) if "restart" in top else RestartPolicy()
    open_to_slices = parse_network(c, top["network"]) if "network" in top else False
    code, code_path = parse_code(c, top["code"]) if "code" in top else (None, None)
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
        secrets=secrets,
        on_node_failure=on_node_failure,
        restart=restart,
        open_to_slices=open_to_slices,
        code=code,
        code_path=code_path,
        resources=resources,
        placement=placement,
    )


def _parse_command(c: Checker, value: object) -> tuple[str, ...] | None:
    shell = isinstance(value, str)
    if isinstance(value, str):
        value = ["sh", "-c", value]
    if not isinstance(value, list) or not value:
        c.fail("command", "must be a non-empty list of strings (or one shell string)")
        return None
    if len(value) > MAX_COMMAND_ARGS:
        c.fail("command", f"has {len(value)} arguments, more than the {MAX_COMMAND_ARGS} allowed")
        return None
    args = []
    for i, arg in enumerate(value):
        path = "command" if shell else f"command[{i}]"
        if not isinstance(arg, (str, int, float)) or isinstance(arg, bool):
            c.fail(path, f"must be a string, got {kind(arg)}")
            return None
        if "\x00" in str(arg):
            c.fail(path, "contains a NUL character, which no program argument can hold")
            return None
        args.append(str(arg))
    size = _exec_bytes(args)
    if size > MAX_COMMAND_BYTES:
        c.fail("command", f"is {size} bytes, more than the {human_bytes(MAX_COMMAND_BYTES)} allowed (put a longer program in the image)")
        return None
    return tuple(args)


def _exec_bytes(strings: list[str]) -> int:
    """Bytes as execve counts them: UTF-8 plus a terminating NUL each."""
    return sum(len(s.encode()) + 1 for s in strings)


def _parse_env(c: Checker, value: object, where: str) -> dict[str, str]:
    if not isinstance(value, Mapping):
        c.fail(where, f"must be a mapping of names to strings, got {kind(value)}")
        return {}
    if len(value) > MAX_ENV_VARS:
        c.fail(where, f"has {len(value)} variables, more than the {MAX_ENV_VARS} allowed")
        return {}
    env: dict[str, str] = {}
    for key, val in value.items():
        path = f"{where}.{str(key)[:40]}"
        if not isinstance(key, str) or not ENV_KEY_RE.match(key):
            c.fail(path, "is not a valid environment variable name")
        elif isinstance(val, (Mapping, list)) or val is None:
            c.fail(path, f"must be a string, got {kind(val)}")
        elif "\x00" in str(val):
            c.fail(path, "contains a NUL character, which no environment variable can hold")
        else:
            env[key] = str(val).lower() if isinstance(val, bool) else str(val)
    size = _exec_bytes([f"{k}={v}" for k, v in env.items()])
    if size > MAX_ENV_BYTES:
        c.fail(where, f"is {size} bytes, more than the {human_bytes(MAX_ENV_BYTES)} allowed")
        return {}
    return env


def _parse_resources(c: Checker, value: object) -> Resources | None:
    res = c.mapping(value, "resources", ("cpu", "memory", "disk", "bandwidth"))
    cpu = c.convert("resources.cpu", res["cpu"], partial(units.parse_cpu, minimum=MIN_CPU, maximum=MAX_CPU)) if "cpu" in res else DEFAULT_CPU
    memory = c.convert("resources.memory", res["memory"], partial(units.parse_bytes, minimum=MIN_MEMORY, maximum=MAX_MEMORY)) if "memory" in res else DEFAULT_MEMORY
    disk = c.convert("resources.disk", res["disk"], partial(units.parse_bytes, minimum=MIN_DISK, maximum=MAX_DISK)) if "disk" in res else DEFAULT_DISK
    bandwidth = c.convert("resources.bandwidth", res["bandwidth"], partial(units.parse_bandwidth, maximum=MAX_BANDWIDTH)) if "bandwidth" in res else 0
    if cpu is None or memory is None or disk is None or bandwidth is None:
        return None
    return Resources(cpu=cpu, memory=memory, disk=disk, bandwidth=bandwidth)


def _parse_location(c: Checker, value: object, path: str) -> LocationRequest | None:
    loc = c.mapping(value, path, (*SELECTORS, "within_km", "count"))
    chosen = [k for k in SELECTORS if k in loc]
    if len(chosen) != 1:
        if isinstance(value, Mapping):
            c.fail(path, "needs exactly one of: " + ", ".join(SELECTORS) + (f" (got {', '.join(chosen)})" if chosen else ""))
        return None
    selector = chosen[0]
    count = c.integer(f"{path}.count", loc.get("count", 1), 1, MAX_COUNT)
    if "within_km" in loc and selector != "near":
        c.fail(f"{path}.within_km", "only goes with near")
    if selector == "near":
        near = c.mapping(loc["near"], f"{path}.near", ("lat", "lon"), ("lat", "lon"))
        lat = c.number(f"{path}.near.lat", near["lat"], -90, 90) if "lat" in near else None
        lon = c.number(f"{path}.near.lon", near["lon"], -180, 180) if "lon" in near else None
        if "within_km" not in loc:
            c.fail(f"{path}.within_km", "required with near")
            return None
        within = c.number(f"{path}.within_km", loc["within_km"], 0, MAX_KM, open_low=True)
        if lat is None or lon is None or within is None or count is None:
            return None
        return LocationRequest(kind="near", lat=lat, lon=lon, within_km=within, count=count)
    raw = loc[selector]
    if selector == "country":
        val = c.country(f"{path}.country", raw)
    elif selector == "region":
        val = c.choice(f"{path}.region", raw, geo.REGIONS)
    else:
        val = c.text(f"{path}.{selector}", raw, MAX_NAME_CHARS)
    if val is None or count is None:
        return None
    return LocationRequest(kind=selector, value=val, count=count)


def _parse_names(c: Checker, value: object, path: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        c.fail(path, f"must be a list, got {kind(value)}")
        return []
    if len(value) > MAX_EXCLUDE_NAMES:
        c.fail(path, f"has {len(value)} names, more than the {MAX_EXCLUDE_NAMES} allowed")
        return []
    out = []
    for i, item in enumerate(value):
        name = c.text(f"{path}[{i}]", item, MAX_NAME_CHARS)
        if name is not None:
            out.append(name)
    return out


def _parse_placement(c: Checker, value: object) -> Placement | None:
    pl = c.mapping(value, "placement", ("count", "distinct", "locations", "exclude", "min_distance_km", "spread", "min_count"))
    locations: list[LocationRequest] = []
    raw_locs = pl.get("locations", [])
    if raw_locs is None:
        raw_locs = []
    if not isinstance(raw_locs, list):
        c.fail("placement.locations", f"must be a list, got {kind(raw_locs)}")
        raw_locs = []
    if len(raw_locs) > MAX_LOCATIONS:
        c.fail("placement.locations", f"has {len(raw_locs)} entries, more than the {MAX_LOCATIONS} allowed")
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
        if count > MAX_COUNT:
            c.fail("placement", f"the locations ask for {count} slivers, more than the {MAX_COUNT} a slice may have")
            count = None
    distinct = c.choice("placement.distinct", pl.get("distinct", "site"), DISTINCT) or "site"
    spread = c.choice("placement.spread", pl["spread"], SPREAD) if pl.get("spread") is not None else None
    min_distance = None
    if pl.get("min_distance_km") is not None:
        min_distance = c.number("placement.min_distance_km", pl["min_distance_km"], 0, MAX_KM)
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
