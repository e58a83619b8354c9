"""``slicemesh migrate``: moving running slivers with their state (slices/migration.py).

Each sliver moves the way its isolation can on both nodes, as their backends say in the
node facts ``move.<kind>`` (``live`` for QEMU VMs, ``cold`` for runc containers; the sim
backend moves nothing). The target comes from ``--to`` or from placement, under the slice's
own constraints beside its other slivers, and is charged from the start: the move is
make-before-break (controller/moves.py), and a move that fails leaves the sliver where it ran.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

from controller import access, moves
from controller.placement import Refusal, place_more
from controller.records import MovePlan, SliverRecord
from slices.errors import SliceMeshError
from slices.protocol import MigrateSlice, MovesBegun, MoveView

if TYPE_CHECKING:
    from controller.api import Call, Context, Handler, Replay
    from controller.cluster import Cluster


class CannotMove(SliceMeshError):
    code = "cannot-move"


def move_kind(cluster: Cluster, node: str, isolation: str) -> str | None:
    """How node ``node`` moves slivers of ``isolation`` (its backend's fact), if at all."""
    rec = cluster.registry.get(node)
    return rec.info.facts.get(f"move.{isolation}") if rec is not None else None


def _movable(cluster: Cluster, sl: SliverRecord) -> str:
    """The kind its move takes; CannotMove says why it cannot move now."""
    if sl.moving_to is not None:
        raise CannotMove(f"sliver {sl.id} is already moving to {sl.moving_to}")
    if sl.state != "running":
        raise CannotMove(f"sliver {sl.id} is {sl.state} on {sl.node}: only a running sliver moves (delete and recreate the slice otherwise)")
    rec = cluster.registry.get(sl.node)
    if rec is None or rec.state != "up":
        raise CannotMove(f"sliver {sl.id}'s node {sl.node} is not up: healing re-places it (on_node_failure)")
    kind = move_kind(cluster, sl.node, sl.spec.isolation)
    if kind is None:
        backend = rec.info.offers.get(sl.spec.isolation, "?")
        raise CannotMove(f"node {sl.node}'s {sl.spec.isolation} backend ({backend}) cannot move slivers")
    return kind


def handlers(ctx: Context) -> dict[type, Handler]:
    cluster, clock = ctx.cluster, ctx.clock

    def targets(msg: MigrateSlice, slivers: list[SliverRecord], kinds: dict[str, str]) -> list[str]:
        sl = cluster.get(msg.slice)
        index = cluster.index()
        going = {s.id for s in slivers}
        isolation = sl.spec.isolation
        # Only nodes that take this kind of move are candidates (and with --to, only that one).
        avoid = {n for n in index.pos if move_kind(cluster, n, isolation) not in kinds.values()}
        if msg.to is not None:
            rec = cluster.registry.get(msg.to)
            if rec is None:
                raise CannotMove(f"no node named {msg.to!r}")
            if rec.state != "up" or rec.admin != "active":
                raise CannotMove(f"node {msg.to} is {rec.state if rec.state != 'up' else rec.admin}: it takes no slivers now")
            if msg.to in {s.node for s in slivers}:
                raise CannotMove(f"sliver {next(s.id for s in slivers if s.node == msg.to)} already runs on {msg.to}")
            if msg.to in avoid:
                raise CannotMove(f"node {msg.to} cannot take a {'/'.join(sorted(set(kinds.values())))} move of {isolation} slivers (its backend does not offer it)")
            avoid |= set(index.pos) - {msg.to}
        avoid |= {s.node for s in slivers}
        existing = [(cluster.slivers[s].request, cluster.slivers[s].node) for s in sl.slivers if s not in going and cluster.slivers[s].node in index.pos]
        result = place_more(sl.spec, index, existing, [s.request for s in slivers], avoid=avoid, suggest=False)
        if isinstance(result, Refusal):
            raise CannotMove(f"no node can take {'it' if len(slivers) == 1 else 'them'} under the slice's constraints: {result.reason}")
        by_request: dict[int, list[str]] = {}
        for a in result.assignments:
            by_request.setdefault(a.request, []).append(a.node)
        out = []
        for s in slivers:
            if not by_request.get(s.request):
                raise CannotMove(f"no node can take sliver {s.id} under the slice's constraints")
            out.append(by_request[s.request].pop(0))
        return out

    def migrate(msg: MigrateSlice, call: Call) -> MovesBegun:
        me = call.user()
        sl = cluster.get(msg.slice)
        if not access.can_see(me, sl.owner, sl.site):
            raise SliceMeshError(f"no slice named {msg.slice!r}", code="not-found")
        refusal = access.manage_refusal(me, f"slice {msg.slice}", sl.owner, sl.site)
        if refusal is not None:
            raise SliceMeshError(f"cannot migrate: {refusal}", code="forbidden")
        if msg.sliver is not None and msg.sliver not in sl.slivers:
            raise SliceMeshError(f"slice {msg.slice} has no sliver {msg.sliver!r}", code="not-found")
        slivers = [cluster.slivers[s] for s in ([msg.sliver] if msg.sliver else sl.slivers)]
        kinds = {s.id: _movable(cluster, s) for s in slivers}
        if msg.to is not None and len(slivers) > 1:
            raise CannotMove(f"slice {msg.slice} has {len(slivers)} slivers: name one to move to {msg.to}, or use --auto")
        chosen = targets(msg, slivers, kinds)
        now = clock()
        begun = []
        for s, node in zip(slivers, chosen, strict=True):
            if move_kind(cluster, node, s.spec.isolation) != kinds[s.id]:
                raise CannotMove(f"node {node} moves {s.spec.isolation} slivers differently from {s.node}")
        for s, node in zip(slivers, chosen, strict=True):
            source = s.node
            moves.begin_move(cluster, s, node, now, f"migrated by {me.who}", MovePlan(kinds[s.id], secrets.token_hex(16), msg.options))
            begun.append(MoveView(sliver=s.id, source=source, target=node, kind=kinds[s.id]))
        return MovesBegun(slice=msg.slice, moves=begun)

    return {MigrateSlice: migrate}


def replays(ctx: Context) -> dict[type, Replay]:
    """A migrate applied just before the controller died: its moves, as they are now."""
    cluster = ctx.cluster

    def migrated(msg: MigrateSlice, call: Call, summary: dict[str, Any]) -> MovesBegun:
        sl = cluster.get(msg.slice)
        views = []
        for sid in sl.slivers:
            s = cluster.slivers[sid]
            if s.moving_to is not None and s.move is not None and (msg.sliver is None or sid == msg.sliver):
                views.append(MoveView(sliver=sid, source=s.node, target=s.moving_to, kind=s.move.kind))
        return MovesBegun(slice=msg.slice, moves=views)

    return {MigrateSlice: migrated}
