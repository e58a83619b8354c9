"""Slices that heal: slivers leave dead, draining and failing places for live ones.

Run after each liveness sweep. Three reasons to move a sliver, each under the slice's own
placement rules (``place_more`` places it beside the slice's other live slivers, so
``distinct``, ``min_distance_km`` and exclusions hold for the slice as it is):

* its node has been ``down`` or ``stopped`` for longer than the grace period (a short blip
  moves nothing), and the slice says ``on_node_failure: replace``: relocated directly;
* its node is ``draining``: moved make-before-break, the old copy running until the new one
  does;
* it failed on a healthy node until its restart policy gave up, and has moves left:
  relocated, and after the last move it stays ``failed`` with its reason.

A sliver that cannot be placed anywhere stays where it is with the refusal as its reason
(so the slice shows ``degraded`` and says why) and is tried again after ``RETRY``.
"""

from __future__ import annotations

import itertools
import logging
from collections import defaultdict
from typing import TYPE_CHECKING

from controller import moves
from controller.placement import Refusal, place_more
from controller.records import SliverRecord

if TYPE_CHECKING:
    from controller.cluster import Cluster

log = logging.getLogger(__name__)

RETRY = 10.0  # seconds before a sliver that could not be re-placed is tried again
FULL_PASS_EVERY = 20  # sweeps over which every sliver is looked at once (each sweep: the candidates and a 20th of all)


def why_move(cluster: Cluster, sl: SliverRecord, now: float, grace: float) -> tuple[str, bool] | None:
    """(why, make-before-break) if ``sl`` should move now, else None."""
    if sl.moving_to is not None or now < sl.retry_at:
        return None
    node = cluster.registry.nodes.get(sl.node)
    spec = cluster.slices[sl.spec.slice].spec
    if node is None:
        return f"node {sl.node} was removed", False
    if node.state != "up" and node.down_since is not None and now - node.down_since >= grace:
        if spec.on_node_failure == "replace":
            return f"node {sl.node} {node.state} for {now - node.down_since:.0f} s", False
        return None
    if node.admin == "draining" and node.state == "up" and not sl.released:
        return f"node {sl.node} is draining", True
    if node.state == "up" and sl.state == "failed" and sl.gave_up and sl.moves < sl.spec.restart.moves:
        return f"failed {sl.restarts} times on {sl.node}: {sl.reason}", False
    return None


def candidates(cluster: Cluster, *, part: int | None = None) -> list[SliverRecord]:
    """The slivers ``why_move`` can say yes to: those on nodes not up or draining, and those
    that gave up; with ``part`` (0 to ``FULL_PASS_EVERY`` - 1) also every
    ``FULL_PASS_EVERY``-th of all the others, from that one on: over that many sweeps a pass
    over every sliver finds any other (a node gone from under them). Looking at every sliver
    each sweep was 50-120 ms of the loop at 12,000 slivers, every 2.5 s; all of them every
    20 sweeps, 120-160 ms at once (bench responsiveness)."""
    ids = set(cluster.gave_up)
    for rec in cluster.registry.nodes.values():
        if rec.slivers and (rec.state != "up" or rec.admin == "draining"):
            ids |= rec.slivers
    found = [cluster.slivers[sid] for sid in sorted(ids) if sid in cluster.slivers]
    if part is not None:
        found += [sl for sl in itertools.islice(cluster.slivers.values(), part % FULL_PASS_EVERY, None, FULL_PASS_EVERY) if sl.id not in ids]
    return found


def heal(cluster: Cluster, now: float, grace: float, *, part: int | None = None) -> int:
    """Start every move that is due; returns how many slivers it moved or began to move.
    ``part``: this sweep's share of the pass over every sliver (``candidates``)."""
    due: dict[str, list[tuple[SliverRecord, str, bool]]] = defaultdict(list)
    for sl in candidates(cluster, part=part):
        if sl.spec.slice not in cluster.slices:
            continue
        decision = why_move(cluster, sl, now, grace)
        if decision is not None:
            due[sl.spec.slice].append((sl, *decision))
    moved = 0
    for name, leaving in due.items():
        moved += _heal_slice(cluster, name, leaving, now)
    return moved


def evict(cluster: Cluster, name: str, now: float, why: str) -> int:
    """Relocate every sliver of a node at once (``nodes remove --force``)."""
    due: dict[str, list[tuple[SliverRecord, str, bool]]] = defaultdict(list)
    for sid in sorted(cluster.registry.nodes[name].slivers):
        sl = cluster.slivers[sid]
        if sl.node == name and sl.spec.slice in cluster.slices:
            due[sl.spec.slice].append((sl, why, False))
    return sum(_heal_slice(cluster, slice_name, leaving, now) for slice_name, leaving in due.items())


def _heal_slice(cluster: Cluster, name: str, leaving: list[tuple[SliverRecord, str, bool]], now: float) -> int:
    rec = cluster.slices[name]
    going = {sl.id for sl, _, _ in leaving}
    existing = [(cluster.slivers[s].request, cluster.slivers[s].node) for s in rec.slivers if s not in going and cluster.slivers[s].node in cluster.registry.nodes]
    avoid = {sl.node for sl, _, _ in leaving}
    result = place_more(rec.spec, cluster.index(), existing, [sl.request for sl, _, _ in leaving], avoid=avoid, suggest=False)
    if isinstance(result, Refusal):
        for sl, why, _ in leaving:
            sl.retry_at = now + RETRY
            cluster.retrying.add(sl.id)
            if sl.state != "running":
                cluster.set_sliver(sl.id, sl.state, f"cannot be re-placed ({why}): {result.reason}", gave_up=sl.gave_up)
        log.warning("slice %s: %d slivers cannot be re-placed: %s", name, len(leaving), result.reason)
        return 0
    targets: dict[int, list[str]] = defaultdict(list)
    for a in result.assignments:
        targets[a.request].append(a.node)
    moved = 0
    for sl, why, gentle in leaving:
        if not targets[sl.request]:
            sl.retry_at = now + RETRY  # min_count let placement give fewer: this one waits
            cluster.retrying.add(sl.id)
            continue
        node = targets[sl.request].pop(0)
        if gentle:
            moves.begin_move(cluster, sl, node, now, why)
        else:
            moves.relocate(cluster, sl, node, now, why)
        moved += 1
    return moved
