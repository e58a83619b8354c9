"""The wide-area model: how long a packet takes from one simulated machine to another.

Between machines at different sites the one-way delay is

    access(src site) + distance_km * us_per_km * inflation / 1000 + access(dst site)   [ms]

where ``distance_km`` is the great-circle distance between the sites. Light in silica fibre
covers a kilometre in ~4.9 us (refractive index ~1.47), hence ``us_per_km = 5``. Real routes
are longer than great circles and follow peering rather than geography: the minimum RTT
measured between well-connected sites is typically 1.5-2x the great-circle fibre figure, hence
``inflation = 1.5``. ``access_ms`` stands for a site's campus/metro network and first hop
into a backbone (per site and direction, overridable per site). Machines at the same site
share a LAN: ``lan_ms``. Jitter and loss are optional and drawn from a seeded generator so
that a run can be repeated.

Pure: no I/O, so it is tested without root and serves both paths (TUN daemon and netem).
"""

from __future__ import annotations

import ipaddress
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

from slices import geo
from slices.errors import SpecError
from slices.settings import setting

MODES = ("auto", "tun", "netem", "off")
IFNAMSIZ = 15


@dataclass(frozen=True)
class WanSettings:
    """Everything about the emulated wide area that a user may set (``slicemesh sim --wan-*``)."""

    mode: str = setting("auto", "auto: netem if the kernel has it, else the TUN delay daemon; tun, netem: that path or an error; off: no delay, no routing between nodes")
    us_per_km: float = setting(5.0, "one-way microseconds per km of fibre (light in glass: ~4.9)")
    inflation: float = setting(1.5, "route length / great-circle length (measured minimum RTTs are 1.5-2x the great-circle fibre RTT)")
    access_ms: float = setting(1.0, "one-way ms from a site into the backbone, added at each end")
    site_access_ms: dict[str, float] = setting({}, "per-site overrides of access_ms, e.g. {princeton: 0.5}")
    lan_ms: float = setting(0.1, "one-way ms between two machines of the same site")
    jitter_ms: float = setting(0.0, "standard deviation of a normal per-packet extra delay (order within a node pair is kept)")
    loss: float = setting(0.0, "probability that a packet between two nodes is dropped (0..1)")
    seed: int = setting(1, "seed of the jitter and loss generator, so a run can be repeated")
    queue_packets: int = setting(100_000, "most packets the delay daemon holds at once; more are dropped and counted")
    queue_bytes: int = setting(256 * 2**20, "most bytes the delay daemon holds at once; more are dropped and counted")
    realtime: bool = setting(True, "run the delay daemon SCHED_FIFO so a busy host does not make releases late (else nice -10)")

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise SpecError("wan.mode", f"{self.mode!r} is not one of {', '.join(MODES)}")
        for name in ("us_per_km", "inflation", "access_ms", "lan_ms", "jitter_ms"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise SpecError(f"wan.{name}", f"must be a number >= 0, not {v!r}")
        if not (0.0 <= self.loss <= 1.0):
            raise SpecError("wan.loss", f"must be between 0 and 1, not {self.loss!r}")
        for site, v in self.site_access_ms.items():
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise SpecError(f"wan.site_access_ms.{site}", f"must be a number >= 0, not {v!r}")
        if self.queue_packets < 1 or self.queue_bytes < 65536:
            raise SpecError("wan.queue_packets", "the queue must hold at least 1 packet and 64 KiB")

    def to_map(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_map(cls, data: dict[str, Any]) -> WanSettings:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise SpecError("wan", f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
        return cls(**data)


@dataclass(frozen=True)
class WanNode:
    """One simulated machine as the wide area sees it: where it is and which subnet is its.

    The subnet -> node table is an input (today from ``slicemesh sim``'s positions, later from
    the controller's assignment); nothing here derives one from the other.
    """

    name: str
    site: str
    lat: float
    lon: float
    subnet: str
    bridge: str

    def to_map(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_map(cls, data: object, where: str = "node") -> WanNode:
        if not isinstance(data, dict):
            raise SpecError(where, "expected a map with name, site, lat, lon, subnet, bridge")
        missing = [f.name for f in fields(cls) if f.name not in data]
        if missing:
            raise SpecError(where, f"missing {', '.join(missing)}")
        name, site, subnet, bridge = (data[k] for k in ("name", "site", "subnet", "bridge"))
        if not all(isinstance(v, str) and v for v in (name, site, subnet, bridge)):
            raise SpecError(where, "name, site, subnet and bridge must be non-empty strings")
        if len(bridge) > IFNAMSIZ:
            raise SpecError(f"{where}.bridge", f"{bridge!r} is longer than {IFNAMSIZ} characters")
        lat, lon = data["lat"], data["lon"]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (lat, lon)) or not (-90 <= lat <= 90 and -180 <= lon <= 180):
            raise SpecError(where, "lat and lon must be numbers in range")
        try:
            net = ipaddress.IPv4Network(subnet)
        except ValueError as exc:
            raise SpecError(f"{where}.subnet", f"{subnet!r} is not an IPv4 network ({exc})") from None
        return cls(name, site, float(lat), float(lon), str(net), bridge)


def check_table(nodes: Sequence[WanNode]) -> None:
    """Names, bridges and subnets must be unique and subnets must not overlap."""
    seen_names: set[str] = set()
    seen_bridges: set[str] = set()
    for n in nodes:
        if n.name in seen_names:
            raise SpecError(f"nodes.{n.name}", "appears twice")
        if n.bridge in seen_bridges:
            raise SpecError(f"nodes.{n.name}.bridge", f"{n.bridge} is also another node's bridge")
        seen_names.add(n.name)
        seen_bridges.add(n.bridge)
    nets = sorted((ipaddress.IPv4Network(n.subnet), n.name) for n in nodes)
    for (a, an), (b, bn) in itertools.pairwise(nets):
        if a.overlaps(b):
            raise SpecError(f"nodes.{bn}.subnet", f"{b} overlaps {a} of {an}")


def access_ms(s: WanSettings, site: str) -> float:
    return float(s.site_access_ms.get(site, s.access_ms))


def one_way_ms(s: WanSettings, a: WanNode, b: WanNode) -> float:
    """The model's one-way delay from ``a`` to ``b`` in ms (the mean, before jitter)."""
    if a.name == b.name:
        return 0.0
    if a.site == b.site:
        return s.lan_ms
    km = geo.haversine_km(a.lat, a.lon, b.lat, b.lon)
    return access_ms(s, a.site) + km * s.us_per_km * s.inflation / 1000.0 + access_ms(s, b.site)


def rtt_ms(s: WanSettings, a: WanNode, b: WanNode) -> float:
    return one_way_ms(s, a, b) + one_way_ms(s, b, a)
