"""Moving a sliver to another node, keeping its id: the two ways it can go.

* ``relocate``: its node is dead (or it failed for good there): it is simply placed anew on
  the other node; when the dead node returns, its desired set no longer holds the sliver and
  its agent destroys the old copy, so nothing runs twice after convergence.
* ``begin_move`` / ``complete_move`` / ``abort_move``: make-before-break (drain, migration):
  the new copy starts on the target while the old one runs on; both nodes hold the sliver's
  reservation until the new copy runs, then the old copy stops. A move that fails leaves
  the sliver where it was.

Every change is written to the store first, then made in memory, as everywhere else.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from controller.records import SliverRecord
from slices import faults

if TYPE_CHECKING:
    from controller.cluster import Cluster

log = logging.getLogger(__name__)


def _rehome(cluster: Cluster, sl: SliverRecord, new: str, notify: set[str]) -> dict[str, int]:
    """Write the sliver's new home (and the generations of the nodes to tell) in one
    transaction, and take it off its old node's books; returns those generations."""
    generations = cluster.next_generations(notify)
    with cluster.store.transaction():
        cluster.store.move_sliver(sl.id, new, sl.moves + 1)
        cluster.store.set_generations(generations.items())
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


def begin_move(cluster: Cluster, sl: SliverRecord, to_node: str, now: float, why: str) -> None:
    generations = cluster.next_generations({to_node})
    with cluster.store.transaction():
        cluster.store.begin_move(sl.id, to_node, now, why)
        cluster.store.set_generations(generations.items())
    faults.hit("drain.after_begin")
    cluster.registry.nodes[to_node].slivers.add(sl.id)
    cluster.charge(sl.spec, to_node, +1)
    sl.moving_to, sl.move_started, sl.move_why = to_node, now, why
    cluster.apply_generations(generations)
    cluster.event(sl.spec.slice, sl.id, to_node, "moving", f"from {sl.node}: {why}; the old copy runs until this one does")


def complete_move(cluster: Cluster, sl: SliverRecord, now: float) -> None:
    """The new copy runs: it becomes the sliver, and the old copy is stopped."""
    old, new = sl.node, sl.moving_to
    assert new is not None
    faults.hit("drain.after_new_running")
    generations = _rehome(cluster, sl, new, {old})
    faults.hit("drain.after_complete")
    cluster.charge(sl.spec, old, -1)
    why = sl.move_why
    sl.node, sl.moving_to, sl.moves, sl.restarts = new, None, sl.moves + 1, 0
    cluster.apply_generations(generations)
    cluster.set_sliver(sl.id, "running", None)
    cluster.event(sl.spec.slice, sl.id, new, "moved", f"from {old} in {now - sl.move_started:.1f} s: {why}")


def abort_move(cluster: Cluster, sl: SliverRecord, now: float, why: str) -> None:
    """The new copy could not start: the sliver stays where it runs."""
    target = sl.moving_to
    assert target is not None
    generations = cluster.next_generations({target})
    with cluster.store.transaction():
        cluster.store.end_move(sl.id)
        cluster.store.set_generations(generations.items())
    holder = cluster.registry.nodes.get(target)
    if holder is not None:
        holder.slivers.discard(sl.id)
    cluster.charge(sl.spec, target, -1)
    sl.moving_to = None
    cluster.apply_generations(generations)
    cluster.event(sl.spec.slice, sl.id, target, "move failed", f"it stays on {sl.node}: {why}")
