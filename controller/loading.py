"""The controller's start-up: every stored node, slice and sliver back into memory, record by
record. One the controller can no longer serve (made by another version, edited by hand) is
quarantined with a log line naming it, and the rest of the cluster is served."""

from __future__ import annotations

from typing import TYPE_CHECKING

from controller.records import MovePlan, SliceRecord, SliverRecord
from controller.registry import NodeRecord
from slices.errors import SliceMeshError
from slices.model import NodeInfo, SliverSpec
from slices.spec import parse_spec

if TYPE_CHECKING:
    from controller.cluster import Cluster


def load(cluster: Cluster) -> None:
    """Everything stored, record by record: one the controller can no longer serve (made
    by another version, or edited by hand) is quarantined with a log line naming it, and
    the rest of the cluster is served. A slice is quarantined whole, with its slivers."""
    bad_slices: dict[str, str] = {}
    cluster.drop_unfinished()  # a crash between the parts of a big create or delete
    # Every node gets a generation above any given before: each agent is told its whole set
    # again, and none can hold one this controller would give again for other slivers.
    generation = cluster.generations_given + 1
    for raw, state, registered, admin in cluster.store.nodes():
        try:
            node = NodeInfo.from_wire(raw)
        except SliceMeshError as exc:
            name = str(raw.get("name", "?")) if isinstance(raw, dict) else "?"
            for slice_name in cluster.store.slices_on(name):
                bad_slices[slice_name] = f"its node {name} is quarantined"
            cluster._quarantine("node", name, raw, exc.reason)
            continue
        period = cluster.registry.period()
        cluster.registry.add(NodeRecord(info=node, state=state, generation=generation, registered=registered, last_seen=registered, period=period, admin=admin))
    for row in cluster.store.slices():
        try:
            if row.name in bad_slices:
                raise SliceMeshError(bad_slices[row.name])
            spec = parse_spec(row.spec, default_owner=row.owner)
        except SliceMeshError as exc:
            bad_slices[row.name] = exc.reason
            continue
        cluster.slices[row.name] = SliceRecord(spec, row.spec, row.owner, row.created, row.expires, row.request_id, row.state, site=row.site)
    loaded = []
    for s in cluster.store.slivers():
        if s.slice in bad_slices:
            continue
        try:
            if s.node not in cluster.registry.nodes:
                raise SliceMeshError(f"sliver {s.id} is on unknown node {s.node}")
            loaded.append(SliverRecord(SliverSpec.from_wire(s.spec), s.node, s.request, s.state, s.reason))
        except SliceMeshError as exc:
            bad_slices[s.slice] = exc.reason
    for rec in loaded:
        if rec.spec.slice in bad_slices:
            continue
        cluster.slivers[rec.id] = rec
        rec.released = rec.state == "exited" and not rec.spec.restart.wants_restart("exited")
        cluster.slices[rec.spec.slice].slivers.append(rec.id)
        cluster.slices[rec.spec.slice].counted(None, rec.state)
        cluster.registry.nodes[rec.node].slivers.add(rec.id)
    for sid, to_node, started, why, plan in cluster.store.moves():
        moving = cluster.slivers.get(sid)
        if moving is not None and to_node in cluster.registry.nodes:
            moving.moving_to, moving.move_started, moving.move_why = to_node, started, why
            moving.move = MovePlan.load(plan)
            cluster.registry.nodes[to_node].slivers.add(sid)
    for name, reason in bad_slices.items():
        sl = cluster.slices.pop(name, None)
        for sid in sl.slivers if sl else ():
            on = cluster.registry.nodes.get(cluster.slivers[sid].node)
            if on is not None:
                on.slivers.discard(sid)
            del cluster.slivers[sid]
        cluster._quarantine("slice", name, cluster.store.slice_doc(name), reason)
    for holder in cluster.registry:  # last: moves in progress charge both their nodes
        cluster.recount(holder)
