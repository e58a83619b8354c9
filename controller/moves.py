"""Moving a sliver to another node, keeping its id: the two ways it can go.

* ``relocate``: its node is dead (or it failed for good there): it is simply placed anew on
  the other node; when the dead node returns, its desired set no longer holds the sliver and
  its agent destroys the old copy, so nothing runs twice after convergence.
* ``begin_move`` / ``complete_move`` / ``abort_move``: make-before-break (drain, migration):
  the new copy starts on the target while the old one runs on; both nodes hold the sliver's
  reservation until the new copy runs, then the old copy stops. A move that fails leaves
  the sliver where it was. A move with a ``MovePlan`` (``slicemesh migrate``) carries the
  sliver's state: the target prepares, reports where it listens (``target_ready`` tells the
  source), the source sends, and the target runs it.

Every change is written to the store first, then made in memory, as everywhere else.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING

from controller import peers
from controller.records import MovePlan, SliverRecord
from slices import faults
from slices.migration import Migration
from slices.model import SliverSpec, SliverStatus

if TYPE_CHECKING:
    from controller.cluster import Cluster

log = logging.getLogger(__name__)


def _rehome(cluster: Cluster, sl: SliverRecord, new: str, notify: set[str]) -> dict[str, int]:
    """Write the sliver's new home (and the generations of the nodes to tell) in one
    transaction, and take it off its old node's books; returns those generations."""
    generations = cluster.next_generations(notify)
    with cluster.store.transaction():
        cluster.store.move_sliver(sl.id, new, sl.moves + 1)
        cluster.store.gave_generations(generations.values())
    holder = cluster.registry.nodes.get(sl.node)
    if holder is not None:
        holder.slivers.discard(sl.id)
    return generations


def relocate(cluster: Cluster, sl: SliverRecord, to_node: str, now: float, why: str) -> None:
    old = sl.node
    generations = _rehome(cluster, sl, to_node, {old, to_node})
    faults.hit("heal.after_replace")
    if not sl.released:
        cluster.charge(sl.spec, old, -1)
        cluster.charge(sl.spec, to_node, +1)
    sl.released = False
    cluster.registry.nodes[to_node].slivers.add(sl.id)
    sl.node, sl.moves, sl.restarts = to_node, sl.moves + 1, 0
    cluster.apply_generations(generations)
    cluster.set_sliver(sl.id, "pending", f"moved from {old}: {why}")
    cluster.event(sl.spec.slice, sl.id, to_node, "moved", f"from {old}: {why}")
    log.info("sliver %s moves from %s to %s: %s", sl.id, old, to_node, why)


def begin_move(cluster: Cluster, sl: SliverRecord, to_node: str, now: float, why: str, plan: MovePlan | None = None) -> None:
    """Start moving ``sl`` to ``to_node``: a fresh copy (drain, healing), or with ``plan`` its
    state (``slicemesh migrate``: the target prepares first, then the source sends)."""
    generations = cluster.next_generations({to_node})
    with cluster.store.transaction():
        cluster.store.begin_move(sl.id, to_node, now, why, plan.stored() if plan else "")
        cluster.store.gave_generations(generations.values())
    faults.hit("drain.after_begin")
    cluster.registry.nodes[to_node].slivers.add(sl.id)
    cluster.charge(sl.spec, to_node, +1)
    sl.moving_to, sl.move_started, sl.move_why, sl.move = to_node, now, why, plan
    cluster.apply_generations(generations)
    how = f"{plan.kind} move: it runs there until its state has arrived here" if plan else "the old copy runs until this one does"
    cluster.event(sl.spec.slice, sl.id, to_node, "moving", f"from {sl.node}: {why}; {how}")


def target_ready(cluster: Cluster, sl: SliverRecord, endpoint: str, disk_endpoint: str | None) -> None:
    """The target of a state-carrying move listens at ``endpoint`` (and serves a VM's disk at
    ``disk_endpoint``): tell the source to send."""
    assert sl.move is not None and sl.moving_to is not None
    plan = dataclasses.replace(sl.move, endpoint=endpoint, disk_endpoint=disk_endpoint)
    generations = cluster.next_generations({sl.node})
    with cluster.store.transaction():  # kept: a restarted controller must not tell the source "as you were"
        cluster.store.begin_move(sl.id, sl.moving_to, sl.move_started, sl.move_why, plan.stored())
        cluster.store.gave_generations(generations.values())
    faults.hit("migrate.target_ready")
    sl.move = plan
    cluster.apply_generations(generations)


def complete_move(cluster: Cluster, sl: SliverRecord, now: float, address: str | None = None) -> None:
    """The new copy runs (at ``address`` on its new node, if it said): it becomes the sliver,
    and the old copy is stopped."""
    old, new = sl.node, sl.moving_to
    assert new is not None
    faults.hit("drain.after_new_running")
    generations = _rehome(cluster, sl, new, {old})
    faults.hit("drain.after_complete")
    cluster.charge(sl.spec, old, -1)
    why, sent = sl.move_why, sl.move.sent if sl.move else None
    sl.node, sl.moving_to, sl.moves, sl.restarts, sl.move = new, None, sl.moves + 1, 0, None
    cluster.apply_generations(generations)
    cluster.set_sliver(sl.id, "running", None)
    cost = f"; {sent.summary()}" if sent is not None else ""
    readdressed = ""
    if address is not None and address != sl.address:
        readdressed = f"; address {sl.address or '?'} -> {address}"
        sl.address = address
        peers.address_changed(cluster, sl.spec.slice)
    cluster.event(sl.spec.slice, sl.id, new, "moved", f"from {old} in {now - sl.move_started:.1f} s: {why}{cost}{readdressed}")


def abort_move(cluster: Cluster, sl: SliverRecord, now: float, why: str) -> None:
    """The new copy could not start: the sliver stays where it runs."""
    target = sl.moving_to
    assert target is not None
    # A state-carrying move told the source too: it hears that the move is off (and a sliver
    # it already sent starts there again).
    generations = cluster.next_generations({target, sl.node} if sl.move is not None else {target})
    with cluster.store.transaction():
        cluster.store.end_move(sl.id)
        cluster.store.gave_generations(generations.values())
    holder = cluster.registry.nodes.get(target)
    if holder is not None:
        holder.slivers.discard(sl.id)
    cluster.charge(sl.spec, target, -1)
    sl.moving_to, sl.move = None, None
    cluster.apply_generations(generations)
    cluster.event(sl.spec.slice, sl.id, target, "move failed", f"it stays on {sl.node}: {why}")


def part_in_move(sl: SliverRecord, node: str) -> SliverSpec:
    """The sliver's spec as ``node`` must see it during a state-carrying move: the target
    prepares to receive; the source sends once the target listens (before that, as it was)."""
    plan = sl.move
    assert plan is not None
    if sl.moving_to == node:
        move = Migration(role="in", kind=plan.kind, token=plan.token, peer=sl.node, options=plan.options)
    elif plan.endpoint is not None:
        move = Migration(role="out", kind=plan.kind, token=plan.token, peer=sl.moving_to or "", endpoint=plan.endpoint, disk_endpoint=plan.disk_endpoint, options=plan.options)
    else:
        return sl.spec
    return dataclasses.replace(sl.spec, migration=move)


def source_said(cluster: Cluster, sl: SliverRecord, st: SliverStatus) -> bool:
    """The source of a state-carrying move reports on it: it could not send (the move is
    taken back) or it sent (the sliver waits for the target); True if that was all."""
    report = st.migration
    assert sl.move is not None and report is not None and sl.moving_to is not None
    if report.phase == "failed":
        abort_move(cluster, sl, cluster.clock(), f"{sl.node} could not send it: {report.reason}")
        return False  # its state there (running again) is folded in as usual
    if report.phase == "sent" and report.total_ms > 0:
        sl.move.sent = report
        cluster.set_sliver(sl.id, "pending", f"moving to {sl.moving_to}: {report.summary()}")
        return True
    return False
