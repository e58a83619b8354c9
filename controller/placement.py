"""Placement: a slice spec and a snapshot of nodes in, a plan or an explained refusal out.

Pure: no I/O, no clocks, no randomness; the same state gives the same plan. ``place`` plans a
whole slice; ``place_more`` places some of a slice's slivers again (after their node died,
to drain a node, to migrate) beside the slivers that stay. The search is in
controller/solver.py (constraints and scoring), the suggestions a refusal carries in
controller/relax.py, the nodes in controller/nodeindex.py.

All-or-nothing unless ``min_count`` allows less. A refusal says, for each request that fell
short, which constraint removed how many nodes, and which single changes to the spec would
make it fit.
"""

from __future__ import annotations

from collections.abc import Collection, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from controller.nodeindex import Mask, NodeIndex
from controller.nodeindex import NodeView as NodeView  # re-exported: callers import them here
from controller.nodeindex import node_view as node_view
from controller.nodeindex import sliver_cost as sliver_cost
from controller.relax import Suggestion, suggest_changes
from controller.solver import Outcome, Problem, conflicts, need_of, solve_steps, static_filters
from controller.steps import complete
from slices.spec import LocationRequest, SliceSpec


class Assignment(NamedTuple):
    """One sliver's place (a tuple: a 10,000-sliver plan made 10,000 frozen records, 100 ms)."""

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
    conflicts: tuple[tuple[str, int], ...] = ()  # candidates lost to the slice's other slivers

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
    reports: tuple[RequestReport, ...] = ()
    #: Single changes to the spec that were tried and fit, in the order controller/relax.py tries them.
    suggestions: tuple[Suggestion, ...] = field(default=())

    @property
    def message(self) -> str:
        """The reason and the suggestions, as one line for an error reply."""
        if not self.suggestions:
            return self.reason
        return self.reason + " | suggestions: " + "; ".join(s.text for s in self.suggestions)

    def details(self) -> dict[str, Any]:
        """How each location request fared and the suggestions, as plain data, for an error
        reply's ``details`` (``--json`` prints them): the numbers behind the one line."""
        requests = [
            {"request": r.path, "describe": r.describe, "wanted": r.wanted, "placed": r.placed, "matched": r.matched,
             "removed": [{"by": why, "nodes": n} for why, n in r.removed if n], "candidates": r.candidates, "text": r.text()}
            for r in self.reports
        ]  # fmt: skip
        return {"requests": requests, "wanted": sum(r.wanted for r in self.reports), "placed": sum(r.placed for r in self.reports), "suggestions": [s.to_wire() for s in self.suggestions]}


def place(spec: SliceSpec, index: NodeIndex, *, explain: bool = False, suggest: bool = True) -> Plan | Refusal:
    """Plan the slice's slivers; ``explain`` fills ``Plan.reports`` (refusals always have them),
    ``suggest`` lets a refusal try the changes that would fit (controller/relax.py)."""
    return complete(place_steps(spec, index, explain=explain, suggest=suggest))


def place_steps(spec: SliceSpec, index: NodeIndex, *, explain: bool = False, suggest: bool = True) -> Generator[None, None, Plan | Refusal]:
    """``place`` in steps (``solver.solve_steps``), for the controller's loop."""
    if not len(index):
        return Refusal("no nodes are registered")
    problem = Problem(spec, want=tuple(r.count for r in spec.placement.requests()))
    return (yield from _answer(index, problem, more=False, explain=explain, suggest=suggest))


def place_more(
    spec: SliceSpec,
    index: NodeIndex,
    existing: Sequence[tuple[int, str]],
    wanted: Sequence[int],
    *,
    avoid: Collection[str] = (),
    explain: bool = False,
    suggest: bool = True,
) -> Plan | Refusal:
    """Place one sliver for each request index in ``wanted`` beside the slice's ``existing`` ones.

    ``existing`` are (request index, node) of the slivers that stay: they count for every
    constraint between slivers (``distinct``, ``min_distance_km``, spreading, one per node)
    and are already charged in the index. ``avoid`` names nodes not to choose (the failed
    node, the node being drained). The plan holds only the new slivers; with ``min_count``
    it may hold fewer, as long as the slice keeps ``min_count``. Raises ``ValueError`` for a
    request index out of range, a node the index does not know, two existing slivers on one
    node, or more slivers for a request than it asks for.
    """
    requests = spec.placement.requests()
    want = [0] * len(requests)
    have = [0] * len(requests)
    at: list[int] = []
    for ri, node in existing:
        _check_request(ri, requests, "existing")
        if node not in index.pos:
            raise ValueError(f"existing sliver on {node!r}: no such node in the index")
        have[ri] += 1
        at.append(index.pos[node])
    if len(set(at)) != len(at):
        raise ValueError("two existing slivers on one node")
    for ri in wanted:
        _check_request(ri, requests, "wanted")
        want[ri] += 1
    for ri, req in enumerate(requests):
        if have[ri] + want[ri] > req.count:
            raise ValueError(f"request {ri} ({req.describe()}) asks for {req.count} slivers: {have[ri]} exist and {want[ri]} more are wanted")
    if not len(index):
        return Refusal("no nodes are registered")
    avoided = tuple(sorted(index.pos[n] for n in set(avoid) if n in index.pos))
    problem = Problem(spec, want=tuple(want), existing=tuple(at), avoid=avoided)
    return complete(_answer(index, problem, more=True, explain=explain, suggest=suggest))


def _check_request(ri: int, requests: Sequence[LocationRequest], what: str) -> None:
    if not 0 <= ri < len(requests):
        raise ValueError(f"{what}: request index {ri} is out of range (the spec has {len(requests)} requests)")


def _answer(index: NodeIndex, problem: Problem, *, more: bool, explain: bool, suggest: bool) -> Generator[None, None, Plan | Refusal]:
    outcome = yield from solve_steps(index, problem)
    need = need_of(problem)
    wanted = sum(problem.want)
    assignments = tuple(Assignment(ri, index.names[n]) for ri, nodes in enumerate(outcome.placed) for n in nodes)
    if outcome.total >= need and not explain:
        return Plan(assignments, (), wanted)
    reports = _reports(index, problem, outcome)
    if outcome.total >= need:
        return Plan(assignments, reports, wanted)
    pl = problem.spec.placement
    if more:
        head = f"cannot place {wanted} more slivers beside the slice's {len(problem.existing)}"
    else:
        head = f"cannot place {pl.count} slivers"
    head += (f" (min_count {pl.min_count})" if pl.min_count is not None else "") + f": only {outcome.total} fit"
    reason = head + "; " + " | ".join(r.text() for r in reports if r.placed < r.wanted)
    hints = suggest_changes(index, problem, outcome) if suggest else ()
    return Refusal(reason, reports, hints)


def _reports(index: NodeIndex, problem: Problem, outcome: Outcome) -> tuple[RequestReport, ...]:
    spec = problem.spec
    pl = spec.placement
    requests = pl.requests()
    filters = static_filters(index, spec, problem.avoid)
    nodes = [*problem.existing, *(n for p in outcome.placed for n in p)]
    taken, distinct, distance = conflicts(index, spec, nodes)
    lost = (
        ("taken by the slice's other slivers", taken),
        (f"share a {pl.distinct} with the slice's other slivers (distinct: {pl.distinct})", distinct),
        (f"closer to the slice's other slivers than min_distance_km ({pl.min_distance_km or 0:g})", distance),
    )
    out = []
    for i, req in enumerate(requests):
        if not problem.want[i]:
            continue
        path = f"placement.locations[{i}]" if req.kind != "any" else "placement.count"
        out.append(_report(i, path, req, problem.want[i], len(outcome.placed[i]), outcome.loc_masks[i], filters, outcome.cands[i], lost))
    return tuple(out)


def _report(
    i: int,
    path: str,
    req: LocationRequest,
    wanted: int,
    placed: int,
    loc_mask: Mask,
    filters: Sequence[tuple[str, Mask]],
    cands: Mask,
    lost: Sequence[tuple[str, Mask]],
) -> RequestReport:
    remaining = loc_mask.copy()
    removed = []
    for why, bad in filters:
        hit = remaining & bad
        removed.append((why, int(np.count_nonzero(hit))))
        remaining &= ~bad
    conflicted: list[tuple[str, int]] = []
    if placed < wanted:
        left = cands.copy()
        for why, mask in lost:
            conflicted.append((why, int(np.count_nonzero(left & mask))))
            left &= ~mask
    return RequestReport(
        index=i,
        path=path,
        describe=req.describe(),
        wanted=wanted,
        placed=placed,
        matched=int(np.count_nonzero(loc_mask)),
        removed=tuple(removed),
        candidates=int(np.count_nonzero(cands)),
        conflicts=tuple(conflicted),
    )


__all__ = ["Assignment", "NodeIndex", "NodeView", "Plan", "Refusal", "RequestReport", "Suggestion", "node_view", "place", "place_more", "place_steps", "sliver_cost"]
