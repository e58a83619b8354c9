"""Placement: a slice spec and a snapshot of nodes in, a plan or an explained refusal out.

Pure: no I/O, no clocks, no randomness; the same state gives the same plan. Nodes live in a
``NodeIndex`` of numpy arrays (free capacity, location ids, unit vectors for great-circle
tests) so each step is a few vector operations instead of a Python loop over every node.

Hard constraints: node up, isolation offered, image offered, free capacity, the location
request, exclusions, ``distinct``, ``min_distance_km`` and one sliver per node per slice.
Soft: ``spread`` (fewest slivers so far in that attribute value), then least loaded.
Requests are served most-constrained first; all-or-nothing unless ``min_count`` allows less.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from controller import backtrack
from slices.geo import EARTH_RADIUS_KM, unit_vectors
from slices.model import NodeInfo, Resources
from slices.spec import LocationRequest, SliceSpec
from slices.units import format_bytes

ATTRS = ("site", "city", "country", "region")
Mask = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class NodeView:
    """What placement needs to know of one node."""

    name: str
    site: str
    city: str
    country: str
    region: str
    lat: float
    lon: float
    up: bool
    kinds: frozenset[str]
    images: frozenset[str]
    cpu: float  # placeable capacity: (capacity - reserve) * overbook
    memory: float
    disk: float
    used_cpu: float = 0.0
    used_memory: float = 0.0
    used_disk: float = 0.0


def node_view(info: NodeInfo, *, up: bool, used: Resources | None = None) -> NodeView:
    """What placement sees of a registered node: placeable = (capacity - reserve) * overbook."""
    loc, placeable, used = info.location, info.placeable, used or Resources()
    return NodeView(
        name=info.name,
        site=info.site,
        city=loc.city,
        country=loc.country,
        region=loc.region,
        lat=loc.lat,
        lon=loc.lon,
        up=up,
        kinds=frozenset(info.offers),
        images=frozenset(info.images),
        cpu=placeable.cpu,
        memory=placeable.memory,
        disk=placeable.disk,
        used_cpu=used.cpu,
        used_memory=used.memory,
        used_disk=used.disk,
    )


def _cos_of(km: float) -> float:
    """Cosine of the central angle of a great-circle distance: d >= km <=> dot <= this."""
    return math.cos(min(km / EARTH_RADIUS_KM, math.pi))


class NodeIndex:
    """Column arrays over all nodes, sorted by name so ties break the same way every time."""

    def __init__(self, nodes: Iterable[NodeView]) -> None:
        views = sorted(nodes, key=lambda n: n.name)
        self.names = [n.name for n in views]
        self.pos = {name: i for i, name in enumerate(self.names)}
        self.vocab: dict[str, dict[str, int]] = {}
        self.ids: dict[str, npt.NDArray[np.int32]] = {}
        for attr in ATTRS:
            values = [getattr(n, attr).lower() if attr == "city" else getattr(n, attr) for n in views]
            vocab = {v: i for i, v in enumerate(sorted(set(values)))}
            self.vocab[attr] = vocab
            self.ids[attr] = np.fromiter((vocab[v] for v in values), dtype=np.int32, count=len(values))
        self.unit = unit_vectors([n.lat for n in views], [n.lon for n in views])
        self.up = np.array([n.up for n in views], dtype=bool)
        self.cap = {r: np.array([getattr(n, r) for n in views], dtype=np.float64) for r in ("cpu", "memory", "disk")}
        self.used = {r: np.array([getattr(n, "used_" + r) for n in views], dtype=np.float64) for r in ("cpu", "memory", "disk")}
        kinds = sorted({k for n in views for k in n.kinds})
        self.kinds = {k: np.array([k in n.kinds for n in views], dtype=bool) for k in kinds}
        images = sorted({i for n in views for i in n.images})
        self.images = {i: np.array([i in n.images for n in views], dtype=bool) for i in images}

    def __len__(self) -> int:
        return len(self.names)

    # mutations by the controller as state changes (placement itself never mutates)
    def set_up(self, name: str, up: bool) -> None:
        self.up[self.pos[name]] = up

    def charge(self, name: str, res: Resources, sign: int = 1) -> None:
        i = self.pos[name]
        self.used["cpu"][i] += sign * res.cpu
        self.used["memory"][i] += sign * res.memory
        self.used["disk"][i] += sign * res.disk

    def location_mask(self, req: LocationRequest) -> Mask:
        n = len(self.names)
        if req.kind == "any":
            return np.ones(n, dtype=bool)
        if req.kind == "near":
            assert req.lat is not None and req.lon is not None and req.within_km is not None
            dots = self.unit @ unit_vectors(req.lat, req.lon)[0]
            return np.asarray(dots >= _cos_of(req.within_km) - 1e-12, dtype=bool)
        assert req.value is not None
        value = req.value.lower() if req.kind == "city" else req.value
        vid = self.vocab[req.kind].get(value)
        return self.ids[req.kind] == vid if vid is not None else np.zeros(n, dtype=bool)


@dataclass(frozen=True)
class Assignment:
    request: int  # index into spec.placement.requests()
    node: str


@dataclass(frozen=True)
class RequestReport:
    """How one location request fared: the numbers behind a refusal."""

    index: int
    path: str
    describe: str
    wanted: int
    placed: int
    matched: int
    removed: tuple[tuple[str, int], ...]  # (constraint, nodes it removed), in order
    candidates: int
    conflicts: tuple[tuple[str, int], ...] = ()  # candidates lost to the other slivers

    def text(self) -> str:
        parts = [f"{self.path} ({self.describe}) wants {self.wanted}: {self.matched} nodes match"]
        parts += [f"{n} {why}" for why, n in self.removed if n]
        parts.append(f"{self.candidates} left")
        if self.placed < self.wanted:
            lost = ", ".join(f"{n} {why}" for why, n in self.conflicts if n)
            parts.append(f"placed {self.placed}" + (f" ({lost})" if lost else ""))
        return "; ".join(parts)


@dataclass(frozen=True)
class Plan:
    assignments: tuple[Assignment, ...]
    reports: tuple[RequestReport, ...]
    wanted: int

    @property
    def partial(self) -> bool:
        return len(self.assignments) < self.wanted


@dataclass(frozen=True)
class Refusal:
    reason: str
    reports: tuple[RequestReport, ...] = field(default=())


def _static_filters(index: NodeIndex, spec: SliceSpec) -> list[tuple[str, Mask]]:
    """The constraints that do not depend on other slivers, in the order a refusal lists them."""
    n = len(index)
    res = spec.resources
    ex = spec.placement.exclude
    excluded = np.zeros(n, dtype=bool)
    for attr, values in (("site", ex.sites), ("country", ex.countries)):
        for v in values:
            vid = index.vocab[attr].get(v)
            if vid is not None:
                excluded |= index.ids[attr] == vid
    for name in ex.nodes:
        if name in index.pos:
            excluded[index.pos[name]] = True
    free = {r: index.cap[r] - index.used[r] for r in ("cpu", "memory", "disk")}
    no_kind = np.zeros(n, dtype=bool)
    return [
        ("down", ~index.up),
        (f"offer no {spec.isolation} isolation", ~index.kinds.get(spec.isolation, no_kind)),
        (f"lack image {spec.image!r}", ~index.images.get(spec.image, no_kind)),
        ("excluded", excluded),
        (f"lack free cpu ({res.cpu:g} cores)", free["cpu"] < res.cpu - 1e-9),
        (f"lack free memory ({format_bytes(res.memory)})", free["memory"] < res.memory),
        (f"lack free disk ({format_bytes(res.disk)})", free["disk"] < res.disk),
    ]


def _load_score(index: NodeIndex, spec: SliceSpec) -> npt.NDArray[np.float64]:
    """Utilisation after adding this sliver: the busier of cpu and memory, in [0, 1]."""
    with np.errstate(divide="ignore", invalid="ignore"):
        cpu = (index.used["cpu"] + spec.resources.cpu) / index.cap["cpu"]
        mem = (index.used["memory"] + spec.resources.memory) / index.cap["memory"]
    return np.nan_to_num(np.maximum(cpu, mem), nan=1.0, posinf=1.0)


def place(spec: SliceSpec, index: NodeIndex, *, explain: bool = False) -> Plan | Refusal:
    """Plan the slice's slivers; ``explain`` fills ``Plan.reports`` (refusals always have them)."""
    pl = spec.placement
    requests = pl.requests()
    paths = [f"placement.locations[{i}]" for i in range(len(pl.locations))] + ["placement.count"]
    if not len(index):
        return Refusal("no nodes are registered")
    filters = _static_filters(index, spec)
    ok = np.ones(len(index), dtype=bool)
    for _, bad in filters:
        ok &= ~bad
    loc_masks = [index.location_mask(r) for r in requests]
    cands = [m & ok for m in loc_masks]
    # Most constrained first; "any" last; stable by request order.
    order = sorted(range(len(requests)), key=lambda i: (requests[i].kind == "any", int(cands[i].sum()), i))

    distinct = pl.distinct if pl.distinct != "none" else None
    cos_min = _cos_of(pl.min_distance_km) if pl.min_distance_km else None
    score = _load_score(index, spec)
    spread_ids = index.ids[pl.spread] if pl.spread else None
    spread_count = np.zeros(len(index.vocab[pl.spread]) if pl.spread else 0, dtype=np.float64)
    blocked_distinct = np.zeros(len(index), dtype=bool)
    blocked_distance = np.zeros(len(index), dtype=bool)
    taken = np.zeros(len(index), dtype=bool)

    placed: dict[int, list[int]] = {i: [] for i in range(len(requests))}
    for ri in order:
        for _ in range(requests[ri].count):
            avail = cands[ri] & ~taken & ~blocked_distinct & ~blocked_distance
            if not avail.any():
                break
            total = score if spread_ids is None else score + 2.0 * spread_count[spread_ids]
            node = int(np.argmin(np.where(avail, total, np.inf)))
            placed[ri].append(node)
            taken[node] = True
            if distinct:
                blocked_distinct |= index.ids[distinct] == index.ids[distinct][node]
            if cos_min is not None:
                blocked_distance |= (index.unit @ index.unit[node]) > cos_min + 1e-12
            if spread_ids is not None:
                spread_count[spread_ids[node]] += 1

    total_placed = sum(len(v) for v in placed.values())
    if total_placed < pl.count:
        slots = [ri for ri in order for _ in range(requests[ri].count)]
        found = backtrack.search(slots, cands, score, index.ids[distinct] if distinct else None, index.unit, cos_min)
        if found is not None:
            placed = {i: [] for i in range(len(requests))}
            for ri, node in zip(slots, found, strict=True):
                placed[ri].append(node)
            total_placed = len(found)
    need = pl.min_count if pl.min_count is not None else pl.count
    if total_placed >= need and not explain:
        return Plan(tuple(Assignment(ri, index.names[n]) for ri in range(len(requests)) for n in placed[ri]), (), pl.count)
    reports = tuple(
        _report(i, paths[i] if requests[i].kind != "any" else "placement.count", requests[i], len(placed[i]), loc_masks[i], filters, cands[i], taken, blocked_distinct, blocked_distance, distinct)
        for i in range(len(requests))
    )
    if total_placed < need:
        short = [r for r in reports if r.placed < r.wanted]
        head = f"cannot place {pl.count} slivers" + (f" (min_count {pl.min_count})" if pl.min_count is not None else "") + f": only {total_placed} fit"
        return Refusal(head + "; " + " | ".join(r.text() for r in short), reports)
    assignments = tuple(Assignment(ri, index.names[n]) for ri in range(len(requests)) for n in placed[ri])
    return Plan(assignments, reports, pl.count)


def _report(
    i: int,
    path: str,
    req: LocationRequest,
    placed: int,
    loc_mask: Mask,
    filters: Sequence[tuple[str, Mask]],
    cands: Mask,
    taken: Mask,
    blocked_distinct: Mask,
    blocked_distance: Mask,
    distinct: str | None,
) -> RequestReport:
    remaining = loc_mask.copy()
    removed = []
    for why, bad in filters:
        hit = remaining & bad
        removed.append((why, int(hit.sum())))
        remaining &= ~bad
    conflicts: list[tuple[str, int]] = []
    if placed < req.count:
        left = cands.copy()
        for why, mask in (
            ("taken by this slice's other slivers", taken),
            (f"share a {distinct} with them (distinct: {distinct})", blocked_distinct),
            ("closer to them than min_distance_km", blocked_distance),
        ):
            hit = left & mask
            conflicts.append((why, int(hit.sum())))
            left &= ~mask
    return RequestReport(
        index=i,
        path=path,
        describe=req.describe(),
        wanted=req.count,
        placed=placed,
        matched=int(loc_mask.sum()),
        removed=tuple(removed),
        candidates=int(cands.sum()),
        conflicts=tuple(conflicts),
    )
