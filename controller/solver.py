"""The placement search: which node each sliver goes to, or how many could not be placed.

Pure: a ``NodeIndex`` and a ``Problem`` in, an ``Outcome`` out; no clocks, no randomness, so
the same state gives the same answer. ``controller.placement`` turns outcomes into plans and
refusals; ``controller.relax`` re-runs the search on weakened specs to suggest changes.

Hard constraints cut the candidates: the static ones (``static_filters``) once per call, the
ones between slivers (one per node, ``distinct``, ``min_distance_km``) as slivers are placed,
counting the slice's slivers that stay where they are. Among the candidates left, the
choice depends on ``placement.spread``:

- absent (the default), geographic: first a node in a city with the fewest of the slice's
  slivers (none, unless the request leaves no other city), then the highest
  ``d / D - LOAD_WEIGHT * load``, where ``d`` is the node's great-circle distance to the
  nearest of the slice's slivers and ``D`` the largest ``d`` among the request's candidates;
  the slice's first sliver goes to the least loaded node.
- an attribute (``site`` ... ``region``): fewest slivers so far in the node's value, then load.
- ``none``: the least loaded node.

``load`` is utilisation after placing, the busier of CPU and memory, in [0, 1]. Ties go to
the cell (controller/nodeindex.py) whose first node comes first by name, and within a cell to
the first node by name. Requests are served most-constrained first. When this greedy pass
falls short, a bounded search (controller/backtrack.py) looks for any placement that fits.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass

import numpy as np

from controller import backtrack
from controller.nodeindex import ATTRS, Floats, Mask, NodeIndex, cos_of
from controller.steps import complete
from slices.spec import SliceSpec
from slices.units import format_bytes

#: How much load weighs against distance in the default spreading: each point of utilisation
#: costs as much as 4% of the farthest candidate's distance, so a node 0.25 busier must be as
#: far again as the farthest to win. Measured on M-Lab (docs/spec.md): weaker weights fill
#: remote sites first and refuse more slices once the cluster is busy.
LOAD_WEIGHT = 4.0
#: What each sliver of the slice already in a city takes off a cell's score there: more than
#: any difference of distance and load (scores lie in [-LOAD_WEIGHT, 1]), so a fresh city wins.
STALE = 2.0 * (1.0 + LOAD_WEIGHT)
#: With ``spread: ATTR``: one more sliver in the node's value outweighs any difference in load.
SPREAD_WEIGHT = 2.0
#: Expansions the backtracking search may make before giving up.
BACKTRACK_BUDGET = 400
SOLVE_CHUNK = 500  # greedy choices between yields of solve_steps: ~5 ms of Python
_EPS = 1e-12


@dataclass(frozen=True)
class Problem:
    """One question: the slice, its slivers that stay, and how many to place for each request."""

    spec: SliceSpec
    want: tuple[int, ...]  # slivers to place now, per entry of spec.placement.requests()
    existing: tuple[int, ...] = ()  # node positions of the slice's slivers that stay
    avoid: tuple[int, ...] = ()  # node positions that must not be chosen


@dataclass(frozen=True)
class Outcome:
    placed: tuple[tuple[int, ...], ...]  # node positions, per request
    loc_masks: tuple[Mask, ...]
    cands: tuple[Mask, ...]

    @property
    def total(self) -> int:
        return sum(len(p) for p in self.placed)


def need_of(problem: Problem) -> int:
    """How many of the wanted slivers must fit: all, or what keeps the slice at ``min_count``."""
    wanted, floor = sum(problem.want), problem.spec.placement.min_count
    return wanted if floor is None else max(0, min(wanted, floor - len(problem.existing)))


def static_filters(index: NodeIndex, spec: SliceSpec, avoid: Sequence[int] = ()) -> list[tuple[str, Mask]]:
    """The constraints that do not depend on other slivers, in the order a refusal lists them.

    ``static_ok`` computes the same, faster, for the search; a test holds them equal.
    """
    n = len(index)
    res = spec.resources
    excluded = _excluded(index, spec)
    avoided = np.zeros(n, dtype=bool)
    avoided[list(avoid)] = True
    more = " with overhead" if index.overhead_of(spec.isolation) is not None else ""
    free = _free(index, spec)
    no_kind = np.zeros(n, dtype=bool)
    return [
        ("down", ~index.up),
        ("cordoned or draining", ~index.schedulable),
        (f"offer no {spec.isolation} isolation", ~index.kinds.get(spec.isolation, no_kind)),
        (f"lack image {spec.image!r}", ~index.images.get(spec.image, no_kind)),
        ("excluded", excluded if excluded is not None else no_kind),
        ("avoided (being vacated)", avoided),
        (f"lack free cpu ({res.cpu:g} cores{more})", ~(free[0] >= res.cpu - 1e-9)),
        (f"lack free memory ({format_bytes(res.memory)}{more})", ~(free[1] >= res.memory)),
        (f"lack free disk ({format_bytes(res.disk)}{more})", ~(free[2] >= res.disk)),
    ]


def static_ok(index: NodeIndex, spec: SliceSpec, avoid: Sequence[int] = ()) -> Mask:
    """The nodes no static constraint rules out: what ``static_filters`` leaves."""
    res = spec.resources
    kind, image = index.kinds.get(spec.isolation), index.images.get(spec.image)
    if kind is None or image is None:
        return np.zeros(len(index), dtype=bool)
    ok: Mask = index.up & index.schedulable
    ok &= kind
    ok &= image
    excluded = _excluded(index, spec)
    if excluded is not None:
        ok &= ~excluded
    if avoid:
        ok[list(avoid)] = False
    ok &= np.logical_and.reduce(_free(index, spec) >= np.array([[res.cpu - 1e-9], [res.memory], [res.disk]]), axis=0)
    return ok


def _excluded(index: NodeIndex, spec: SliceSpec) -> Mask | None:
    ex = spec.placement.exclude
    if not (ex.sites or ex.countries or ex.nodes):
        return None
    excluded = np.zeros(len(index), dtype=bool)
    for attr, values in (("site", ex.sites), ("country", ex.countries)):
        for v in values:
            vid = index.vocab[attr].get(v)
            if vid is not None:
                excluded |= index.ids[attr] == vid
    for name in ex.nodes:
        if name in index.pos:
            excluded[index.pos[name]] = True
    return excluded


def _free(index: NodeIndex, spec: SliceSpec) -> Floats:
    """Free capacity (a row per resource), less what a sliver of this kind costs the node beyond its own."""
    free = index.capacity - index.usage
    extra = index.overhead_of(spec.isolation)
    if extra is not None:
        free -= extra
    return free


def load_of(index: NodeIndex, spec: SliceSpec) -> Floats:
    """Utilisation after adding one sliver of this spec: the busier of CPU and memory."""
    res, extra = spec.resources, index.overhead_of(spec.isolation)
    after = index.usage[:2] + np.array([[res.cpu], [res.memory]])
    if extra is not None:
        after += extra[:2]
    after *= index.inv_cap
    load: Floats = np.maximum(after[0], after[1])
    return load


def solve(index: NodeIndex, problem: Problem, *, budget: int = BACKTRACK_BUDGET) -> Outcome:
    """Place ``problem.want`` slivers; the outcome says where, and how many did not fit."""
    return complete(solve_steps(index, problem, budget=budget))


def solve_steps(index: NodeIndex, problem: Problem, *, budget: int = BACKTRACK_BUDGET) -> Generator[None, None, Outcome]:
    """``solve``, yielding after every ``SOLVE_CHUNK`` slivers placed (controller/steps.py):
    a slice with a sliver on each of 10,000 nodes is ~100 ms of choices, not one stall."""
    spec = problem.spec
    requests = spec.placement.requests()
    ok = static_ok(index, spec, problem.avoid)
    loc_masks = tuple(index.location_mask(r) for r in requests)
    stacked = np.array(loc_masks) & ok  # a row per request: every request at once
    cands = tuple(stacked)
    sizes = np.add.reduce(stacked, axis=1, dtype=np.int64).tolist()  # candidates per request
    order = sorted((i for i in range(len(requests)) if problem.want[i]), key=lambda i: (requests[i].kind == "any", sizes[i], i))
    greedy = _Greedy(index, spec)
    for at in problem.existing:
        greedy.mark(at)
    greedy.serve(stacked)
    placed: list[list[int]] = [[] for _ in requests]
    chosen = 0
    for ri in order:
        for _ in range(problem.want[ri]):
            node = greedy.choose(ri)
            if node is None:
                break
            placed[ri].append(node)
            greedy.mark(node)
            chosen += 1
            if chosen % SOLVE_CHUNK == 0:
                yield
    if sum(map(len, placed)) < sum(problem.want) and budget > 0:
        slots = [ri for ri in order for _ in range(problem.want[ri])]
        found = _search(index, problem, slots, cands, greedy.load, budget)
        if found is not None:
            placed = [[] for _ in requests]
            for ri, node in zip(slots, found, strict=True):
                placed[ri].append(node)
    return Outcome(tuple(tuple(p) for p in placed), loc_masks, cands)


def _search(index: NodeIndex, problem: Problem, slots: list[int], cands: Sequence[Mask], load: Floats, budget: int) -> list[int] | None:
    """The bounded search (controller/backtrack.py): over cells when ``distinct`` lets each
    take one sliver, else over nodes. Nodes for each slot, or None."""
    spec = problem.spec
    pl = spec.placement
    cos_min = cos_of(pl.min_distance_km) + _EPS if pl.min_distance_km else None
    if pl.distinct == "none":
        unit = index.unit

        def node_rules_out(node: int) -> Mask:
            out = (unit @ unit[node]) > cos_min if cos_min is not None else np.zeros(len(index), dtype=bool)
            out[node] = True
            return out

        return backtrack.search(slots, cands, [load] * len(cands), node_rules_out, blocked=_blocked_by(index, spec, problem.existing), budget=budget)
    distinct = pl.distinct

    def cell_rules_out(cell: int) -> Mask:
        closed = index.cell_closed(cell, distinct, cos_min)
        assert closed is not None
        return closed

    blocked = np.zeros(index.cells, dtype=bool)
    for node in problem.existing:
        blocked |= cell_rules_out(index.cell_of[node])
    keyed = [np.where(c, load, np.inf) for c in cands]
    best = [np.minimum.reduceat(k, index.cell_start) for k in keyed]
    found = backtrack.search(slots, [b < np.inf for b in best], best, cell_rules_out, blocked=blocked, budget=budget)
    if found is None:
        return None
    return [index.cell_bounds[cell][0] + int(keyed[ri][slice(*index.cell_bounds[cell])].argmin()) for ri, cell in zip(slots, found, strict=True)]


def _blocked_by(index: NodeIndex, spec: SliceSpec, nodes: Sequence[int]) -> Mask:
    """What the hard constraints between slivers rule out, given slivers on ``nodes``."""
    taken, distinct, distance = conflicts(index, spec, nodes)
    return taken | distinct | distance


def conflicts(index: NodeIndex, spec: SliceSpec, nodes: Sequence[int]) -> tuple[Mask, Mask, Mask]:
    """Nodes taken by, sharing the ``distinct`` value of, and too close to slivers on ``nodes``."""
    n = len(index)
    pl = spec.placement
    at = np.asarray(nodes, dtype=np.int64)
    taken = np.zeros(n, dtype=bool)
    taken[at] = True
    distinct = np.zeros(n, dtype=bool)
    if pl.distinct != "none" and len(at):
        ids = index.ids[pl.distinct]
        distinct = np.isin(ids, ids[at])
    distance = np.zeros(n, dtype=bool)
    if pl.min_distance_km and len(at):
        distance = (index.unit @ index.unit[at].T).max(axis=1) > cos_of(pl.min_distance_km) + _EPS
    return taken, distinct, distance


class _Greedy:
    """The state of one greedy pass: what the slice's slivers so far rule out or discourage.

    Every constraint between slivers treats the nodes of a cell (same site, city, country,
    region, coordinates) alike, and loads do not change during one pass, so the pass keeps,
    per request, the least load of a candidate in each cell, chooses a cell, then the least
    loaded candidate in it: the work per sliver grows with places, not machines. A cell's
    score is ``-inf`` when ruled out, else the sum of a term of the slice's slivers so far
    (``self.shared``: the city and ``spread`` penalties) and one of the request (its load).
    """

    def __init__(self, index: NodeIndex, spec: SliceSpec) -> None:
        pl = spec.placement
        self.index = index
        self.load = load_of(index, spec)
        self.taken: list[int] = []
        self.requests: dict[int, _Request] = {}
        self.shared = np.zeros(index.cells)  # -inf: ruled out by distinct or distance; else penalties
        self.distinct = pl.distinct if pl.distinct != "none" else None
        self.cos_min = cos_of(pl.min_distance_km) + _EPS if pl.min_distance_km else None
        self.geo = pl.spread is None
        self.spread = pl.spread if pl.spread in ATTRS else None
        # the default spreading avoids a second sliver in a city unless nothing else is left
        self.soft_city = self.geo and pl.distinct in ("none", "site")
        self.load_weight = LOAD_WEIGHT if self.geo else 1.0
        self.near = np.full(index.cells, np.inf)  # metres to the nearest of the slice's slivers
        self.any_placed = False
        self.effect = ("effect", self.distinct, self.cos_min, self.soft_city, self.spread)

    def mark(self, node: int) -> None:
        """A sliver of the slice is on ``node``: update what it rules out and discourages."""
        index = self.index
        cell = index.cell_of[node]
        self.taken.append(node)
        self.any_placed = True
        key = (self.effect, cell)
        effect = index.row(key)
        if effect is None:
            effect = index.keep(key, self._effect(cell))
        self.shared += effect
        if self.distinct is None:
            for req in self.requests.values():
                req.drop(node, cell)
        if self.geo:
            np.minimum(self.near, index.cell_metres(cell), out=self.near)

    def _effect(self, cell: int) -> Floats:
        """What a sliver in ``cell`` does to every cell's score: -inf where it rules the cell
        out, minus the city and ``spread`` penalties where it shares those."""
        index = self.index
        effect = np.zeros(index.cells)
        closed = index.cell_closed(cell, self.distinct, self.cos_min)
        if closed is not None:
            effect[closed] = -np.inf
        if self.soft_city:
            effect -= STALE * index.cell_same("city", cell)
        if self.spread is not None:
            effect -= SPREAD_WEIGHT * index.cell_same(self.spread, cell)
        return effect

    def serve(self, cands: Mask) -> None:
        """Start serving requests (a row of candidates each) beside the slivers marked so far."""
        index = self.index
        keyed = np.where(cands, self.load, np.inf)  # load of each untaken candidate (inf: none)
        if self.taken:
            keyed[:, self.taken] = np.inf
        best = np.minimum.reduceat(keyed, index.cell_start, axis=1) if len(index) else keyed  # a cell's nodes lie together
        score = best * -self.load_weight  # -inf where the cell has no candidate
        self.requests = {ri: _Request(index, keyed[ri], score[ri], self.load_weight) for ri in range(len(cands))}

    def choose(self, ri: int) -> int | None:
        """The node for one more sliver of request ``ri``, or None when none is left."""
        req = self.requests[ri]
        key = self.shared + req.score
        if self.geo and self.any_placed:
            far = float(np.maximum.reduce(self.near, where=np.isfinite(key), initial=0.0))
            if far > 0.0:
                key += self.near * (1.0 / far)
        cell = int(key.argmax())
        return req.least(cell) if key[cell] > -np.inf else None



class _Request:
    """One request's candidates in a greedy pass: by cell, the least load of an untaken one."""

    def __init__(self, index: NodeIndex, keyed: Floats, score: Floats, weight: float) -> None:
        self.index, self.keyed, self.score, self.weight = index, keyed, score, weight

    def least(self, cell: int) -> int:
        """The least loaded untaken candidate in ``cell`` (the first by name among equals)."""
        start, end = self.index.cell_bounds[cell]
        return start + int(self.keyed[start:end].argmin())

    def drop(self, node: int, cell: int) -> None:
        """``node`` is taken: the cell's best is the next candidate."""
        start, end = self.index.cell_bounds[cell]
        self.keyed[node] = np.inf
        self.score[cell] = float(np.minimum.reduce(self.keyed[start:end])) * -self.weight
