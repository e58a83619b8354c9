"""Plain records that travel between controller and agents: nodes, slivers, usage.

They are frozen dataclasses with ``to_wire``/``from_wire`` so that the protocol layer carries
plain maps while the rest of the code works with typed values.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, TypeVar

from slices.errors import ProtocolError

SLIVER_STATES = ("pending", "running", "failed", "lost", "stopped")
SLICE_STATES = ("pending", "running", "degraded", "failed", "expired")
#: States in which a slice stays until something changes it: ``create --wait`` stops there.
SETTLED_SLICE_STATES = ("running", "degraded", "failed", "expired")
NODE_STATES = ("up", "down")

T = TypeVar("T")


def _from_map(cls: type[T], data: object, what: str) -> T:
    if not isinstance(data, dict):
        raise ProtocolError(f"{what}: expected a map")
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    try:
        return cls(**{k: v for k, v in data.items() if k in names})
    except TypeError as exc:
        raise ProtocolError(f"{what}: {exc}") from None


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class Location:
    city: str
    country: str
    region: str
    lat: float
    lon: float

    @classmethod
    def from_wire(cls, data: object) -> Location:
        loc = _from_map(cls, data, "node.location")
        if not all(isinstance(v, str) for v in (loc.city, loc.country, loc.region)):
            raise ProtocolError("node.location: city, country and region must be strings")
        if not (_number(loc.lat) and _number(loc.lon) and -90 <= loc.lat <= 90 and -180 <= loc.lon <= 180):
            raise ProtocolError("node.location: lat and lon must be numbers in range")
        return cls(loc.city, loc.country, loc.region, float(loc.lat), float(loc.lon))


@dataclass(frozen=True)
class Capacity:
    cpu: float
    memory: int
    disk: int

    def to_wire(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_wire(cls, data: object) -> Capacity:
        cap = _from_map(cls, data, "capacity")
        if not all(_number(v) and v >= 0 for v in (cap.cpu, cap.memory, cap.disk)):
            raise ProtocolError("capacity: cpu, memory and disk must be numbers >= 0")
        return cap


@dataclass(frozen=True)
class NodeInfo:
    """What an agent says about its machine when it registers."""

    name: str
    site: str
    location: Location
    capacity: Capacity
    reserve: Capacity
    offers: dict[str, str]  # isolation kind -> backend name ("sim", "runc", "qemu")
    images: tuple[str, ...]
    labels: dict[str, str] = field(default_factory=dict)
    overbook: float = 1.0

    def to_wire(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "site": self.site,
            "location": dataclasses.asdict(self.location),
            "capacity": self.capacity.to_wire(),
            "reserve": self.reserve.to_wire(),
            "offers": dict(self.offers),
            "images": list(self.images),
            "labels": dict(self.labels),
            "overbook": self.overbook,
        }

    @classmethod
    def from_wire(cls, data: object) -> NodeInfo:
        if not isinstance(data, dict):
            raise ProtocolError("node: expected a map")
        try:
            info = cls(
                name=str(data["name"]),
                site=str(data["site"]),
                location=Location.from_wire(data["location"]),
                capacity=Capacity.from_wire(data["capacity"]),
                reserve=Capacity.from_wire(data.get("reserve", {"cpu": 0, "memory": 0, "disk": 0})),
                offers={str(k): str(v) for k, v in dict(data["offers"]).items()},
                images=tuple(str(i) for i in data.get("images", ())),
                labels={str(k): str(v) for k, v in dict(data.get("labels", {})).items()},
                overbook=float(data.get("overbook", 1.0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(f"node: missing or malformed field {exc}") from None
        if not info.offers:
            raise ProtocolError("node: offers no isolation kind")
        if info.overbook <= 0:
            raise ProtocolError("node: overbook must be > 0")
        return info


@dataclass(frozen=True)
class SliverSpec:
    """One sliver as the controller wants it on one node; ``id`` does not depend on the node."""

    id: str
    slice: str
    isolation: str
    image: str
    cpu: float
    memory: int
    disk: int | None = None
    bandwidth: int | None = None
    command: tuple[str, ...] | None = None
    env: dict[str, str] = field(default_factory=dict)

    def to_wire(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["command"] = list(self.command) if self.command is not None else None
        return d

    @classmethod
    def from_wire(cls, data: object) -> SliverSpec:
        spec = _from_map(cls, data, "sliver")
        cmd, env = spec.command, spec.env if spec.env is not None else {}
        if cmd is not None and (not isinstance(cmd, (list, tuple)) or not all(isinstance(a, str) for a in cmd)):
            raise ProtocolError("sliver: command must be a list of strings")
        if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
            raise ProtocolError("sliver: env must map strings to strings")
        if not (isinstance(spec.id, str) and isinstance(spec.slice, str) and _number(spec.cpu) and _number(spec.memory)):
            raise ProtocolError("sliver: id, slice, cpu and memory are required")
        return dataclasses.replace(spec, command=tuple(cmd) if cmd is not None else None, env=dict(env))


@dataclass(frozen=True)
class Usage:
    """Resource use of one sliver (or a whole node), as measured by its backend."""

    cpu_seconds: float = 0.0
    cpu_cores: float = 0.0  # current share, cores
    memory: int = 0
    memory_peak: int = 0
    oom_kills: int = 0
    pids: int = 0
    net_rx: int = 0
    net_tx: int = 0

    def to_wire(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_wire(cls, data: object) -> Usage:
        usage = _from_map(cls, data, "usage")
        if not all(_number(v) for v in dataclasses.astuple(usage)):
            raise ProtocolError("usage: every figure must be a number")
        return usage


@dataclass(frozen=True)
class SliverStatus:
    """The actual state of one sliver on a node, as the agent reports it."""

    id: str
    state: str
    reason: str | None = None
    usage: Usage | None = None

    def to_wire(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "state": self.state,
            "reason": self.reason,
            "usage": self.usage.to_wire() if self.usage else None,
        }

    @classmethod
    def from_wire(cls, data: object) -> SliverStatus:
        if not isinstance(data, dict) or not isinstance(data.get("id"), str):
            raise ProtocolError("sliver status: expected a map with an id")
        state = data.get("state")
        if state not in SLIVER_STATES:
            raise ProtocolError(f"sliver status: unknown state {state!r}")
        usage = data.get("usage")
        return cls(
            id=data["id"],
            state=str(state),
            reason=str(data["reason"]) if data.get("reason") is not None else None,
            usage=Usage.from_wire(usage) if usage is not None else None,
        )
