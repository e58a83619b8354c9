"""What placement knows of the nodes: one ``NodeView`` per node, held as numpy columns.

A ``NodeIndex`` keeps capacity and usage, location ids and unit vectors (for great-circle
tests) in arrays so that each placement step is a few vector operations instead of a Python
loop over every node. The controller mutates it as state changes (a sliver charged or
released, a node down or cordoned); placement only reads it, apart from caches of things
that never change: location masks (most slices ask for the same few regions) and rows per
cell (distances, what a sliver there rules out).
"""

from __future__ import annotations

import math
from collections.abc import Generator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from controller.steps import complete
from slices.geo import EARTH_RADIUS_KM
from slices.geovec import unit_vectors
from slices.model import NodeInfo, Resources
from slices.spec import LocationRequest

ATTRS = ("site", "city", "country", "region")
RESOURCES = ("cpu", "memory", "disk")
Mask = npt.NDArray[np.bool_]
Floats = npt.NDArray[np.float64]
_LOCATION_CACHE = 256  # masks kept; a mask is one byte per node
_MEMO_BYTES = 64 * 1024**2  # rows kept per cell (distances, same site or city): at most this much


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
    #: False while the node is cordoned or draining: it keeps its slivers but takes no new ones.
    schedulable: bool = True
    #: What each sliver of an isolation kind costs the node beyond the sliver's own resources
    #: (a VM sliver: QEMU's memory next to the guest's RAM). Charged with the sliver.
    overhead: Mapping[str, Resources] = field(default_factory=dict)


def node_view(
    info: NodeInfo,
    *,
    up: bool,
    used: Resources | None = None,
    schedulable: bool = True,
    overhead: Mapping[str, Resources] | None = None,
) -> NodeView:
    """What placement sees of a registered node: placeable = (capacity - reserve) * overbook.

    ``used`` is what the node's slivers hold, their per-kind overhead included (``sliver_cost``).
    """
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
        schedulable=schedulable,
        overhead=dict(overhead or {}),
    )


def sliver_cost(resources: Resources, isolation: str, overhead: Mapping[str, Resources]) -> Resources:
    """What one sliver holds on a node: its resources plus the node's overhead for its kind."""
    extra = overhead.get(isolation)
    return resources + extra if extra is not None else resources


def cos_of(km: float) -> float:
    """Cosine of the central angle of a great-circle distance: d >= km <=> dot <= this."""
    return math.cos(min(km / EARTH_RADIUS_KM, math.pi))


def _in_cells(views: list[NodeView]) -> list[NodeView]:
    """The nodes grouped in cells: nodes that no constraint between slivers tells apart (same
    site, city, country, region and coordinates). Placement chooses a cell, then a node in
    it, so its work per sliver grows with the number of places, not of machines. Cells come
    in the order of their first node by name, and nodes by name within a cell, so the same
    nodes give the same order whatever order they come in."""
    first: dict[tuple[object, ...], int] = {}
    for i, n in enumerate(views):
        first.setdefault((n.site, n.city.lower(), n.country, n.region, n.lat, n.lon), i)
    return sorted(views, key=lambda n: (first[(n.site, n.city.lower(), n.country, n.region, n.lat, n.lon)], n.name))


def _rows(values: list[list[float]]) -> Floats:
    """Per-node triples as one row per resource."""
    return np.array(values, dtype=np.float64).reshape(len(values), len(RESOURCES)).T.copy()


class NodeIndex:
    """Column arrays over all nodes, grouped in cells (see ``_in_cells``) so that ties break
    the same way every time."""

    def __init__(self, nodes: Iterable[NodeView]) -> None:
        complete(self._build(nodes))

    @classmethod
    def built_steps(cls, nodes: Iterable[NodeView]) -> Generator[None, None, NodeIndex]:
        """The index of ``nodes``, built in steps (a few milliseconds each at 10,000 nodes;
        built at once it held the controller's loop 45 ms here, over 100 ms under load).
        It is the caller's only once it is whole."""
        index = cls.__new__(cls)
        yield from index._build(nodes)
        return index

    def _build(self, nodes: Iterable[NodeView]) -> Generator[None, None, None]:
        views = _in_cells(sorted(nodes, key=lambda n: n.name))
        yield
        self.names = [n.name for n in views]
        self.pos = {name: i for i, name in enumerate(self.names)}
        self.vocab: dict[str, dict[str, int]] = {}
        self.ids: dict[str, npt.NDArray[np.int32]] = {}
        #: Each attribute's values by id, as a node spells it (a city: the first node's spelling).
        self.values: dict[str, list[str]] = {}
        for attr in ATTRS:
            values = [getattr(n, attr).lower() if attr == "city" else getattr(n, attr) for n in views]
            vocab = {v: i for i, v in enumerate(sorted(set(values)))}
            self.vocab[attr] = vocab
            self.ids[attr] = np.fromiter((vocab[v] for v in values), dtype=np.int32, count=len(values))
            spelled = dict.fromkeys(vocab, "")
            for v, n in zip(values, views, strict=True):
                spelled[v] = spelled[v] or getattr(n, attr)
            self.values[attr] = list(spelled.values())
            yield
        self.unit = unit_vectors([n.lat for n in views], [n.lon for n in views])
        self._cells(views)
        yield
        self.up = np.array([n.up for n in views], dtype=bool)
        self.schedulable = np.array([n.schedulable for n in views], dtype=bool)
        # one row per resource (cpu, memory, disk); ``cap`` and ``used`` name the rows
        self.capacity = _rows([[n.cpu, n.memory, n.disk] for n in views])
        self.usage = _rows([[n.used_cpu, n.used_memory, n.used_disk] for n in views])
        self.cap = {r: self.capacity[k] for k, r in enumerate(RESOURCES)}
        self.used = {r: self.usage[k] for k, r in enumerate(RESOURCES)}
        with np.errstate(divide="ignore"):
            # 1 / capacity of cpu and memory, for utilisation; a node without capacity never fits a sliver anyway
            self.inv_cap = np.where(self.capacity[:2] > 0, 1.0 / np.where(self.capacity[:2] > 0, self.capacity[:2], 1.0), np.inf)
        yield
        kinds = sorted({k for n in views for k in n.kinds})
        self.kinds = {k: np.array([k in n.kinds for n in views], dtype=bool) for k in kinds}
        images = sorted({i for n in views for i in n.images})
        self.images = {i: np.array([i in n.images for n in views], dtype=bool) for i in images}
        yield
        charged = sorted({k for n in views for k in n.overhead})
        none = Resources()
        self.overhead: dict[str, Floats] = {  # per kind, rows like ``capacity``
            k: _rows([[o.cpu, o.memory, o.disk] for o in (n.overhead.get(k, none) for n in views)]) for k in charged
        }
        self._locations: dict[tuple[str, str | None, float | None, float | None, float | None], Mask] = {}

    def _cells(self, views: list[NodeView]) -> None:
        """Where each cell's nodes lie (``_in_cells`` put them together) and what they share."""
        cells: dict[tuple[object, ...], int] = {}
        key = zip(*(self.ids[a].tolist() for a in ATTRS), (n.lat for n in views), (n.lon for n in views), strict=True)
        self.cell = np.fromiter((cells.setdefault(k, len(cells)) for k in key), dtype=np.int64, count=len(views))
        self.cell_start = np.searchsorted(self.cell, np.arange(len(cells)))
        self.cell_end = np.append(self.cell_start[1:], len(views))[: len(cells)]
        # the same as lists: placement reads single entries, which lists serve faster
        self.cell_of: list[int] = self.cell.tolist()
        self.cell_bounds: list[tuple[int, int]] = list(zip(self.cell_start.tolist(), self.cell_end.tolist(), strict=True))
        first = self.cell_start
        self.cell_ids = {a: self.ids[a][first] for a in ATTRS}
        self.cell_unit = self.unit[first]
        self._memo: dict[tuple[object, ...], npt.NDArray[Any]] = {}
        self._memo_bytes = 0

    # Rows per cell, cached (they depend on nothing that changes): placement asks for the
    # same few hundred places slice after slice. ``row``/``keep`` serve placement's own rows.

    def row(self, key: tuple[object, ...]) -> npt.NDArray[Any] | None:
        """A row kept under ``key``, or None."""
        return self._memo.get(key)

    def cell_metres(self, cell: int) -> Floats:
        """Great-circle distances from one cell to every cell, rounded to whole metres so
        that equal distances compare equal (ties then go by name)."""
        key = ("metres", cell)
        row = self._memo.get(key)
        if row is None:
            angle = np.arccos(np.clip(self.cell_unit @ self.cell_unit[cell], -1.0, 1.0))
            row = self.keep(key, np.rint(angle * (EARTH_RADIUS_KM * 1000.0)))
        return row

    def cell_same(self, attr: str, cell: int) -> Mask:
        """The cells sharing ``attr`` with one cell."""
        key = (attr, cell)
        row = self._memo.get(key)
        if row is None:
            row = self.keep(key, self.cell_ids[attr] == self.cell_ids[attr][cell])
        return row

    def cell_closed(self, cell: int, distinct: str | None, cos_min: float | None) -> Mask | None:
        """The cells a sliver in ``cell`` rules out: the same ``distinct`` value, or a cosine of
        the angle above ``cos_min`` (closer than min_distance_km). None if neither applies."""
        if distinct is None and cos_min is None:
            return None
        key = ("closed", cell, distinct, cos_min)
        row = self._memo.get(key)
        if row is None:
            closed = np.zeros(self.cells, dtype=bool) if distinct is None else self.cell_same(distinct, cell).copy()
            if cos_min is not None:
                closed |= (self.cell_unit @ self.cell_unit[cell]) > cos_min
            row = self.keep(key, closed)
        return row

    def keep(self, key: tuple[object, ...], row: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """Keep a row (read-only from now on) under ``key``; all rows stay under _MEMO_BYTES."""
        row.flags.writeable = False
        if self._memo_bytes + row.nbytes > _MEMO_BYTES:
            self._memo.clear()
            self._memo_bytes = 0
        self._memo[key] = row
        self._memo_bytes += row.nbytes
        return row

    def __len__(self) -> int:
        return len(self.names)

    @property
    def cells(self) -> int:
        return len(self.cell_start)

    # ---- mutations by the controller as state changes (placement itself never mutates) ----

    def set_up(self, name: str, up: bool) -> None:
        self.up[self.pos[name]] = up

    def refresh(self, view: NodeView) -> None:
        """A node's state, admin state and holdings as ``view`` has them (its facts are as
        the index was built with): for a node that changed while the index was built."""
        i = self.pos[view.name]
        self.up[i] = view.up
        self.schedulable[i] = view.schedulable
        self.usage[:, i] = (view.used_cpu, view.used_memory, view.used_disk)

    def set_schedulable(self, name: str, schedulable: bool) -> None:
        """Cordon or drain a node (False: it takes no new slivers) or return it to service."""
        self.schedulable[self.pos[name]] = schedulable

    def charge(self, name: str, res: Resources, sign: int = 1, *, isolation: str | None = None) -> None:
        """Add (or with ``sign=-1`` release) one sliver; ``isolation`` adds the node's overhead for it."""
        i = self.pos[name]
        usage = self.usage
        usage[0, i] += sign * res.cpu
        usage[1, i] += sign * res.memory
        usage[2, i] += sign * res.disk
        extra = self.overhead.get(isolation) if isolation is not None else None
        if extra is not None:
            usage[:, i] += sign * extra[:, i]

    def charge_many(self, names: Iterable[str], res: Resources, sign: int = 1, *, isolation: str | None = None) -> None:
        """``charge`` of the same sliver on each of ``names`` (a name may come more than once;
        names not in the index are skipped): one vector operation per resource."""
        pos = self.pos
        idx = np.fromiter((pos[n] for n in names if n in pos), dtype=np.intp)
        if not len(idx):
            return
        usage = self.usage
        for row, amount in enumerate((res.cpu, res.memory, res.disk)):
            np.add.at(usage[row], idx, sign * amount)
        extra = self.overhead.get(isolation) if isolation is not None else None
        if extra is not None:
            for row in range(len(RESOURCES)):
                np.add.at(usage[row], idx, sign * extra[row, idx])

    # ---- what placement reads ---------------------------------------------------------------

    def overhead_of(self, isolation: str) -> Floats | None:
        """Per-node overhead of one isolation kind (rows like ``capacity``), or None if no node charges any."""
        return self.overhead.get(isolation)

    def location_mask(self, req: LocationRequest) -> Mask:
        """The nodes a location request matches (read-only: the array is shared)."""
        key = (req.kind, req.value, req.lat, req.lon, req.within_km)
        mask = self._locations.get(key)
        if mask is None:
            mask = self._location_mask(req)
            mask.flags.writeable = False
            if len(self._locations) >= _LOCATION_CACHE:
                self._locations.clear()
            self._locations[key] = mask
        return mask

    def _location_mask(self, req: LocationRequest) -> Mask:
        n = len(self.names)
        if req.kind == "any":
            return np.ones(n, dtype=bool)
        if req.kind == "near":
            assert req.lat is not None and req.lon is not None and req.within_km is not None
            dots = self.unit @ unit_vectors(req.lat, req.lon)[0]
            return np.asarray(dots >= cos_of(req.within_km) - 1e-12, dtype=bool)
        assert req.value is not None
        value = req.value.lower() if req.kind == "city" else req.value
        vid = self.vocab[req.kind].get(value)
        return self.ids[req.kind] == vid if vid is not None else np.zeros(n, dtype=bool)
