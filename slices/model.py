"""Records that travel between controller and agents: nodes, slivers, resources, usage.

Frozen dataclasses whose field types and bounds are the wire contract: ``slices.wire``
decodes them from msgpack maps (refusing anything out of bounds) and encodes them back.
``Resources`` is the one resource vector: a slice asks for it, a node offers and reserves
it, placement charges it, and agents measure usage against it.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from slices import geo
from slices.isolation import ISOLATIONS
from slices.migration import Migration, MigrationReport
from slices.wire import Bad, decode, fld, to_wire

SLIVER_STATES = ("pending", "running", "exited", "failed", "lost", "stopped")
SLICE_STATES = ("pending", "running", "exited", "degraded", "failed", "expired")
#: States in which a slice stays until something changes it: ``create --wait`` stops there.
SETTLED_SLICE_STATES = ("running", "exited", "degraded", "failed", "expired")
NODE_STATES = ("up", "down", "stopped")
#: What an operator made of a node: ``cordoned`` and ``draining`` take no new slivers, and a
#: draining node's slivers are moved elsewhere, each started there before it stops here.
NODE_ADMIN = ("active", "cordoned", "draining")

NODE_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"
SITE_NAME = r"[a-z0-9][a-z0-9._-]{0,63}"
ROLES = ("admin", "pi", "user")  # what a user may be at their site (docs/security.md)
Role = Literal["admin", "pi", "user"]  # ROLES, as a type
SLICE_NAME = r"[a-z][a-z0-9-]{0,62}"
SLIVER_ID = r"[a-z0-9][a-z0-9-]{0,79}"
IMAGE_NAME = r"[a-z0-9][a-z0-9._-]{0,63}"
BACKEND_NAME = r"[a-z][a-z0-9_-]{0,31}"
LABEL_KEY = r"[A-Za-z0-9][A-Za-z0-9._/-]{0,63}"
ENV_KEY = r"[A-Za-z_][A-Za-z0-9_]{0,127}"
IPV4 = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}"

MAX_CPU = 4096.0  # cores: larger than any machine
MAX_BYTES = 1 << 60  # an exbibyte: memory and disk sizes
MAX_BANDWIDTH = 1 << 42  # ~4.4 Tbit/s
MAX_COUNTER = 1 << 62  # cumulative counters (bytes, seconds)


@dataclass(frozen=True)
class Location:
    city: str = fld(max_len=128)
    country: str = fld(pattern=r"[A-Z]{2}")
    region: str = fld(pattern="|".join(geo.REGIONS))
    lat: float = fld(lo=-90, hi=90)
    lon: float = fld(lo=-180, hi=180)

    def __post_init__(self) -> None:
        if not geo.is_country(self.country):
            raise Bad(f"{self.country!r} is not an ISO 3166 alpha-2 country code", "country")


@dataclass(frozen=True)
class Resources:
    """CPU cores, memory bytes, disk bytes, bandwidth bits/s (0: not asked for / unshaped)."""

    cpu: float = fld(0.0, lo=0, hi=MAX_CPU)
    memory: int = fld(0, lo=0, hi=MAX_BYTES)
    disk: int = fld(0, lo=0, hi=MAX_BYTES)
    bandwidth: int = fld(0, lo=0, hi=MAX_BANDWIDTH)

    def __add__(self, other: Resources) -> Resources:
        return Resources(self.cpu + other.cpu, self.memory + other.memory, self.disk + other.disk, self.bandwidth + other.bandwidth)

    def __sub__(self, other: Resources) -> Resources:
        return Resources(self.cpu - other.cpu, self.memory - other.memory, self.disk - other.disk, self.bandwidth - other.bandwidth)

    def less(self, other: Resources) -> Resources:
        """``self - other`` with no component below zero (``clamped``), in one vector."""
        cpu, memory, disk, bandwidth = self.cpu - other.cpu, self.memory - other.memory, self.disk - other.disk, self.bandwidth - other.bandwidth
        return Resources(cpu if cpu > 0 else 0.0, memory if memory > 0 else 0, disk if disk > 0 else 0, bandwidth if bandwidth > 0 else 0)

    def scaled(self, factor: float) -> Resources:
        return Resources(self.cpu * factor, int(self.memory * factor), int(self.disk * factor), int(self.bandwidth * factor))

    def clamped(self) -> Resources:
        """Negative components (a reserve larger than the capacity) become zero."""
        return Resources(max(0.0, self.cpu), max(0, self.memory), max(0, self.disk), max(0, self.bandwidth))

    def to_wire(self) -> dict[str, Any]:
        return {"cpu": self.cpu, "memory": self.memory, "disk": self.disk, "bandwidth": self.bandwidth}


#: A node's capacity and reserve are resource vectors like any other.
Capacity = Resources


@dataclass(frozen=True)
class NodeInfo:
    """What an agent says about its machine when it registers."""

    name: str = fld(pattern=NODE_NAME)
    site: str = fld(pattern=SITE_NAME)
    location: Location = fld()
    capacity: Resources = fld()
    reserve: Resources = fld(factory=Resources)
    offers: dict[str, str] = fld(factory=dict, pattern=BACKEND_NAME, max_items=4, key_pattern="|".join(ISOLATIONS))  # kind -> backend
    images: tuple[str, ...] = fld((), pattern=IMAGE_NAME, max_items=64)
    labels: dict[str, str] = fld(factory=dict, kind="text", max_len=256, max_items=64, key_pattern=LABEL_KEY)
    overbook: float = fld(1.0, lo=0.01, hi=100.0)
    #: Facts a backend found at start (e.g. ``vm.accelerator: tcg``), shown by ``slicemesh nodes``.
    facts: dict[str, str] = fld(factory=dict, kind="text", max_len=256, max_items=32)

    def __post_init__(self) -> None:
        if not self.offers:
            raise Bad("offers no isolation kind", "offers")

    @functools.cached_property
    def placeable(self) -> Resources:
        """(capacity - reserve) * overbook: what placement may hand out (kept: a view of
        10,000 nodes asks for it 10,000 times)."""
        return (self.capacity - self.reserve).clamped().scaled(self.overbook)

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = to_wire(self)
        return out

    @classmethod
    def from_wire(cls, data: object) -> NodeInfo:
        return decode(cls, data, "node")


RESTART_POLICIES = ("never", "on-failure", "always")


@dataclass(frozen=True)
class RestartPolicy:
    """What a node does when a sliver's command ends (Nomad's ``restart`` is the anchor):
    restart it after ``backoff`` seconds, doubling up to ``max_backoff``, at most ``attempts``
    times in a row; then the controller moves it to another node, at most ``moves`` times;
    then it stays ``failed`` with its reason. ``on-failure`` restarts only a non-zero exit or a
    kill; ``always`` also a clean exit; ``never`` leaves it as it ended."""

    policy: str = fld("on-failure", pattern="|".join(RESTART_POLICIES))
    attempts: int = fld(5, lo=0, hi=1000)
    backoff: float = fld(1.0, lo=0.1, hi=3600.0)
    max_backoff: float = fld(60.0, lo=0.1, hi=86400.0)
    moves: int = fld(2, lo=0, hi=100)

    def delay(self, restarts: int) -> float:
        """Seconds before restart number ``restarts + 1``."""
        return float(min(self.max_backoff, self.backoff * 2 ** min(restarts, 30)))

    def wants_restart(self, state: str) -> bool:
        return self.policy == "always" or (self.policy == "on-failure" and state == "failed")


CODE_DELIVERY = ("pull", "push")


@dataclass(frozen=True)
class CodeRef:
    """A slice's code bundle (slices/bundle.py), by SHA-256, and how it reaches the nodes."""

    digest: str = fld(pattern=r"[0-9a-f]{64}")
    size: int = fld(lo=0, hi=1 << 34)
    delivery: str = fld("pull", pattern="|".join(CODE_DELIVERY))


@dataclass(frozen=True)
class SliverSpec:
    """One sliver as the controller wants it on one node; ``id`` does not depend on the node."""

    #: decoded maps kept per process (``wire._kept``): an agent is sent each spec again in
    #: every desired set, and a host of simulated machines holds thousands
    WIRE_CACHE: ClassVar[int] = 8192

    id: str = fld(pattern=SLIVER_ID)
    slice: str = fld(pattern=SLICE_NAME)
    isolation: str = fld(pattern="|".join(ISOLATIONS))
    image: str = fld(pattern=IMAGE_NAME)
    resources: Resources = fld()
    command: tuple[str, ...] | None = fld(None, kind="data", max_len=64 * 1024, max_items=1024)
    env: dict[str, str] = fld(factory=dict, kind="data", max_len=64 * 1024, max_items=256, key_pattern=ENV_KEY)
    restart: RestartPolicy = fld(factory=RestartPolicy)
    #: This node's part in a move in progress (never stored: the controller derives it per
    #: node when it sends the desired set; optional, so older agents still decode).
    migration: Migration | None = None
    #: Its slice's code, seen read-only at /code (optional: older agents still decode).
    code: CodeRef | None = None

    # The backends read the vector's parts often enough to deserve short names.
    @property
    def cpu(self) -> float:
        return self.resources.cpu

    @property
    def memory(self) -> int:
        return self.resources.memory

    @property
    def disk(self) -> int:
        return self.resources.disk

    @property
    def bandwidth(self) -> int:
        return self.resources.bandwidth

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = to_wire(self)
        return out

    @classmethod
    def from_wire(cls, data: object) -> SliverSpec:
        return decode(cls, data, "sliver")


@dataclass(frozen=True)
class Usage:
    """Resource use of one sliver (or a whole node), as measured by its backend."""

    cpu_seconds: float = fld(0.0, lo=0, hi=MAX_COUNTER)
    cpu_cores: float = fld(0.0, lo=0, hi=MAX_CPU)
    memory: int = fld(0, lo=0, hi=MAX_BYTES)
    memory_peak: int = fld(0, lo=0, hi=MAX_BYTES)
    oom_kills: int = fld(0, lo=0, hi=MAX_COUNTER)
    pids: int = fld(0, lo=0, hi=1 << 32)
    net_rx: int = fld(0, lo=0, hi=MAX_COUNTER)
    net_tx: int = fld(0, lo=0, hi=MAX_COUNTER)

    @classmethod
    def total(cls, usages: Iterable[Usage]) -> Usage:
        """The sum of ``usages``, made once (a node's, every heartbeat: not one per sliver)."""
        columns = list(zip(*map(_values, usages), strict=True))
        return cls(*map(sum, columns)) if columns else cls()

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = to_wire(self)
        return out

    @classmethod
    def from_wire(cls, data: object) -> Usage:
        return decode(cls, data, "usage")


@dataclass(frozen=True)
class SliverStatus:
    """The actual state of one sliver on a node, as the agent reports it."""

    id: str = fld(pattern=SLIVER_ID)
    state: str = fld(pattern="|".join(SLIVER_STATES))
    reason: str | None = fld(None, kind="text", max_len=512)
    usage: Usage | None = None
    restarts: int = fld(0, lo=0, hi=1 << 31)  # restarts in a row on this node, by its policy
    gave_up: bool = False  # restarts exhausted: the controller may move it
    #: Its IPv4 address on its node's sliver subnet (None: it has none, e.g. the sim backend);
    #: optional, so agents of protocol 2.0 that do not send it still decode.
    address: str | None = fld(None, pattern=IPV4)
    #: Its node's part in a move in progress, or how the last one it took part in ended.
    migration: MigrationReport | None = None
    #: How its code reached the node: "pulled from the controller in 0.41 s", "cached".
    code: str | None = fld(None, kind="text", max_len=256)

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = to_wire(self)
        return out

    @classmethod
    def from_wire(cls, data: object) -> SliverStatus:
        return decode(cls, data, "sliver status")


def _values(u: Usage) -> tuple[Any, ...]:
    return (u.cpu_seconds, u.cpu_cores, u.memory, u.memory_peak, u.oom_kills, u.pids, u.net_rx, u.net_tx)


__all__ = [
    "CODE_DELIVERY",
    "ISOLATIONS",
    "NODE_STATES",
    "RESTART_POLICIES",
    "SETTLED_SLICE_STATES",
    "SLICE_STATES",
    "SLIVER_STATES",
    "Capacity",
    "CodeRef",
    "Location",
    "NodeInfo",
    "Resources",
    "RestartPolicy",
    "SliverSpec",
    "SliverStatus",
    "Usage",
]
