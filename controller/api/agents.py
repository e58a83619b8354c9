"""Agents: registration, heartbeats and reports fold a node's actual state into the cluster."""

from __future__ import annotations

from typing import TYPE_CHECKING

from slices.errors import SliceMeshError
from slices.protocol import Beat, Heartbeat, Register, Report

if TYPE_CHECKING:
    from controller.api import Call, Context, Handler


class UnknownNode(SliceMeshError):
    code = "unknown-node"


def handlers(ctx: Context) -> dict[type, Handler]:
    cluster, settings, clock = ctx.cluster, ctx.settings, ctx.clock

    def beat(period: float, generation: int) -> Beat:
        return Beat(generation=generation, period=period, misses=settings.liveness_misses)

    def register(msg: Register, call: Call) -> Beat:
        rec = cluster.register(msg.node, call.peer, msg.slivers, msg.generation, clock())
        return beat(rec.period, rec.generation)

    def heartbeat(msg: Heartbeat, call: Call) -> Beat:
        rec = cluster.registry.get(msg.node)
        if rec is None:
            raise UnknownNode(f"node {msg.node!r} is not registered with this controller; register again")
        now = clock()
        cluster.node_seen(rec, call.peer, now)
        rec.usage = msg.usage
        cluster.apply_report(rec, msg.generation, msg.slivers)
        if msg.generation < rec.generation and now - rec.last_push > rec.period:
            cluster.dirty_nodes.add(rec.name)  # our push was lost or is still queued
        return beat(rec.period, rec.generation)

    def report(msg: Report, call: Call) -> None:
        rec = cluster.registry.get(msg.node)
        if rec is None:
            return
        cluster.node_seen(rec, call.peer, clock())
        cluster.apply_report(rec, msg.generation, msg.slivers)

    return {Register: register, Heartbeat: heartbeat, Report: report}
