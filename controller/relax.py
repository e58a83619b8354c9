"""What a refused slice could change to fit: single changes to its spec, each tried, not guessed.

After a refusal, the search (controller/solver.py, greedy pass only) runs again on the spec
weakened one way at a time, in this order; each kind of change that fits is reported once,
with the spec fields it changes:

1. ``distinct`` one step weaker (region, country, city, site, none), stepping on until one
   fits; only when the slice's other slivers' ``distinct`` values cost a short request nodes.
2. ``min_distance_km``: first without it; if that fits, bisection (values rounded to two
   significant figures) for the largest that fits; only when distance cost a short request nodes.
3. fewer slivers: ``min_count`` at what fit, then (for a whole slice) ``count`` at what fit,
   lowering the counts of the location requests that fell short.
4. without one exclusion: the excluded sites, countries and nodes that removed nodes a short
   request matches, the one that removed most first.
5. a wider location for a short request: a site's city, a city's country, a country's
   region, a region anywhere; ``near`` twice as far.

Bounded: at most ``MAX_TRIALS`` runs, and runs whose estimated cost (``_cost_us``: a few
vector operations over every node per request, then a step per sliver) sums to at most
``BUDGET_US``, so a refusal at 10,000 nodes still answers within about 50 ms
(docs/benchmarks.md). The estimate is a formula, not a clock, so the same refusal always
gets the same suggestions. A change that needs another with it is not found; every change
reported does fit.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from controller.nodeindex import Mask, NodeIndex
from controller.solver import Outcome, Problem, conflicts, need_of, solve, static_filters
from slices.limits import MAX_KM
from slices.spec import LocationRequest, SliceSpec

MAX_TRIALS = 24
BUDGET_US = 20_000.0  # estimated microseconds of trial runs per refusal
MAX_EXCLUSION_TRIALS = 6
MAX_WIDENED = 4
_WEAKER = {"region": "country", "country": "city", "city": "site", "site": "none"}


@dataclass(frozen=True)
class Suggestion:
    """One change that makes the spec fit: a line for people, the changed fields for programs.

    ``changes`` maps a spec field path to its new value; None removes the field (or the
    location entry).
    """

    text: str
    changes: Mapping[str, Any]

    def to_wire(self) -> dict[str, Any]:
        return {"text": self.text, "changes": dict(self.changes)}


def suggest_changes(index: NodeIndex, problem: Problem, outcome: Outcome) -> tuple[Suggestion, ...]:
    """The changes, in the order above, that make a refused ``problem`` fit."""
    spec, pl = problem.spec, problem.spec.placement
    requests = pl.requests()
    short = [i for i in range(len(requests)) if len(outcome.placed[i]) < problem.want[i]]
    if not short:
        return ()
    trials = _Trials(index, problem)
    nodes = [*problem.existing, *(n for p in outcome.placed for n in p)]
    taken, distinct, distance = conflicts(index, spec, nodes)
    reachable = np.logical_or.reduce([outcome.cands[i] for i in short]) & ~taken
    out: list[Suggestion] = []
    if pl.distinct != "none" and (reachable & distinct).any():
        out += _weaker_distinct(trials, spec)
    if pl.min_distance_km and (reachable & distance).any():
        out += _shorter_distance(trials, spec)
    out += _fewer(trials, problem, outcome)
    out += _without_exclusion(trials, index, problem, [outcome.loc_masks[i] for i in short])
    out += _wider(trials, index, problem, short)
    return tuple(out)


class _Trials:
    """Runs of the search on changed specs, within the budget."""

    def __init__(self, index: NodeIndex, problem: Problem) -> None:
        self.index, self.problem = index, problem
        self.whole = not problem.existing and sum(problem.want) == problem.spec.placement.count
        self.runs, self.budget = MAX_TRIALS, BUDGET_US

    def fits(self, spec: SliceSpec) -> bool:
        """Whether ``spec`` fits (False also once the budget is spent)."""
        want = tuple(r.count for r in spec.placement.requests()) if self.whole else self.problem.want
        cost = _cost_us(len(self.index), len(want), sum(want))
        if self.runs <= 0 or self.budget < cost:
            self.runs = 0
            return False
        self.runs -= 1
        self.budget -= cost
        trial = replace(self.problem, spec=spec, want=want)
        return solve(self.index, trial, budget=0).total >= need_of(trial)


def _cost_us(nodes: int, requests: int, slivers: int) -> float:
    """What one greedy run costs, about, in microseconds (measured at 1,000 and 10,000 nodes on
    a busy 2-core machine): ~10 vector operations over the nodes per request, 40 us a sliver."""
    return nodes * (10 * requests + 10) / 1000 + 40 * slivers


def _with(spec: SliceSpec, **changes: Any) -> SliceSpec:
    return replace(spec, placement=replace(spec.placement, **changes))


def _weaker_distinct(trials: _Trials, spec: SliceSpec) -> list[Suggestion]:
    was = weaker = spec.placement.distinct
    while weaker in _WEAKER:
        weaker = _WEAKER[weaker]
        if trials.fits(_with(spec, distinct=weaker)):
            return [Suggestion(f"feasible with distinct: {weaker} instead of distinct: {was}", {"placement.distinct": weaker})]
    return []


def _shorter_distance(trials: _Trials, spec: SliceSpec) -> list[Suggestion]:
    km = spec.placement.min_distance_km or 0.0
    if not trials.fits(_with(spec, min_distance_km=None)):
        return []
    lo, hi = 0.0, km
    for _ in range(6):
        mid = float(f"{(lo + hi) / 2:.2g}")
        if not lo < mid < hi:
            break
        if trials.fits(_with(spec, min_distance_km=mid)):
            lo = mid
        else:
            hi = mid
    text = f"feasible without min_distance_km {km:g}" + (f" ({lo:,g} works)" if lo else "")
    return [Suggestion(text, {"placement.min_distance_km": lo or None})]


def _fewer(trials: _Trials, problem: Problem, outcome: Outcome) -> list[Suggestion]:
    spec, pl = problem.spec, problem.spec.placement
    kept = len(problem.existing) + outcome.total
    if kept < 1:
        return []
    out = []
    if trials.fits(_with(spec, min_count=kept)):
        out.append(Suggestion(f"feasible with min_count {kept} ({kept} of {pl.count} fit)", {"placement.min_count": kept}))
    if not trials.whole:
        return out
    changes: dict[str, Any] = {"placement.count": kept}
    locations = []
    for i, loc in enumerate(pl.locations):
        got = len(outcome.placed[i])
        if got == loc.count:
            locations.append(loc)
        elif got:
            locations.append(replace(loc, count=got))
            changes[f"placement.locations[{i}].count"] = got
        else:
            changes[f"placement.locations[{i}]"] = None
    floor = pl.min_count if pl.min_count is not None and pl.min_count <= kept else None
    if floor != pl.min_count:
        changes["placement.min_count"] = None
    if trials.fits(_with(spec, count=kept, locations=tuple(locations), min_count=floor)):
        also = [f"{path.removeprefix('placement.')} {value}" if value is not None else f"without {path}" for path, value in changes.items() if path != "placement.count"]
        out.append(Suggestion(f"feasible with count {kept}" + (f" ({', '.join(also)})" if also else ""), changes))
    return out


def _without_exclusion(trials: _Trials, index: NodeIndex, problem: Problem, wanted_where: list[Mask]) -> list[Suggestion]:
    spec = problem.spec
    ex = spec.placement.exclude
    if not (ex.sites or ex.countries or ex.nodes):
        return []
    before = np.zeros(len(index), dtype=bool)
    for why, mask in static_filters(index, spec, problem.avoid):
        if why == "excluded":
            break
        before |= mask
    live = np.logical_or.reduce(wanted_where) & ~before
    options: list[tuple[int, str, str]] = []
    for field_name, attr, values in (("sites", "site", ex.sites), ("countries", "country", ex.countries)):
        for v in values:
            vid = index.vocab[attr].get(v)
            if vid is not None:
                options.append((int(np.count_nonzero(live & (index.ids[attr] == vid))), field_name, v))
    options += [(int(live[index.pos[name]]), "nodes", name) for name in ex.nodes if name in index.pos]
    for _, field_name, value in sorted((o for o in options if o[0]), key=lambda o: (-o[0], o[1], o[2]))[:MAX_EXCLUSION_TRIALS]:
        kept = frozenset(getattr(ex, field_name)) - {value}
        if trials.fits(_with(spec, exclude=replace(ex, **{field_name: kept}))):
            return [Suggestion(f"feasible without exclude.{field_name} {value}", {f"placement.exclude.{field_name}": sorted(kept)})]
    return []


def _wider(trials: _Trials, index: NodeIndex, problem: Problem, short: list[int]) -> list[Suggestion]:
    spec, pl = problem.spec, problem.spec.placement
    for i in [i for i in short if i < len(pl.locations)][:MAX_WIDENED]:
        req = pl.locations[i]
        path = f"placement.locations[{i}]"
        if req.kind == "region":
            if trials.whole and trials.fits(_with(spec, locations=pl.locations[:i] + pl.locations[i + 1 :])):
                return [Suggestion(f"feasible if {path} ({req.describe()}) may go anywhere", {path: None, "placement.count": pl.count})]
            continue
        wider = widen(index, req)
        if wider is not None and trials.fits(_with(spec, locations=(*pl.locations[:i], wider, *pl.locations[i + 1 :]))):
            return [Suggestion(f"feasible if {wider.describe()} is allowed for {path} ({req.describe()})", {path: _entry(wider)})]
    return []


def widen(index: NodeIndex, req: LocationRequest) -> LocationRequest | None:
    """The next wider request: a site's city, a city's country, a country's region; near x2."""
    if req.kind == "near":
        assert req.within_km is not None
        return replace(req, within_km=min(MAX_KM, req.within_km * 2)) if req.within_km < MAX_KM else None
    up = {"site": "city", "city": "country", "country": "region"}.get(req.kind)
    if up is None:
        return None
    matched = index.location_mask(req)
    values = Counter(index.ids[up][matched].tolist())
    if not values:
        return None
    vid = min(values, key=lambda v: (-values[v], index.values[up][v]))  # the most common, then by name
    return LocationRequest(kind=up, value=index.values[up][vid], count=req.count)


def _entry(req: LocationRequest) -> dict[str, Any]:
    """A location request as the spec writes it."""
    if req.kind == "near":
        return {"near": {"lat": req.lat, "lon": req.lon}, "within_km": req.within_km, "count": req.count}
    return {req.kind: req.value, "count": req.count}
