"""``exec`` and ``logs``: requests passed on to the agent of the sliver's node.

The client's request is answered later, when that agent answers the relayed one (the relay
checks the agent's reply against the type the request expects before passing it on).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from controller import access
from controller.cluster import Cluster
from controller.records import SliverRecord
from controller.relay import DEFERRED, Deferred
from controller.truststore import Principal
from slices.errors import SliceMeshError
from slices.protocol import ExecInput, ExecOutput, ExecResize, ExecSliver, Message, NodeExec, NodeLogs, SliverLogs

if TYPE_CHECKING:
    from controller.api import Call, Context, Handler


def pick_sliver(cluster: Cluster, me: Principal, slice_name: str, node: str | None, sliver: str | None = None) -> SliverRecord:
    """The sliver ``sliver``, or the one on ``node``, or the slice's only sliver, of a slice
    ``me`` manages. A command sent to "some" sliver of several would run somewhere the user
    did not choose: refused, naming the slivers to choose from."""
    sl = cluster.get(slice_name)
    if not access.can_see(me, sl.owner, sl.site):
        raise SliceMeshError(f"no slice named {slice_name!r}", code="not-found")
    refusal = access.manage_refusal(me, f"slice {slice_name}", sl.owner, sl.site)
    if refusal is not None:
        raise SliceMeshError(f"cannot reach its slivers: {refusal}", code="forbidden")
    slivers = [cluster.slivers[s] for s in sl.slivers]
    if sliver is not None:
        slivers = [s for s in slivers if s.spec.id == sliver]
        if not slivers:
            raise SliceMeshError(f"slice {slice_name!r} has no sliver {sliver!r}", code="not-found")
    if node is not None:
        slivers = [s for s in slivers if s.node == node]
        if not slivers:
            raise SliceMeshError(f"slice {slice_name!r} has no sliver on node {node!r}", code="not-found")
    if not slivers:
        raise SliceMeshError(f"slice {slice_name!r} has no slivers", code="not-found")
    if len(slivers) > 1:
        names = [f"{s.spec.id} on {s.node}" for s in slivers]
        shown = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
        details = {"slivers": [{"sliver": s.spec.id, "node": s.node, "state": s.state} for s in slivers[:1000]]}
        raise SliceMeshError(f"slice {slice_name!r} has {len(slivers)} slivers: choose one with --node or --sliver ({shown})", code="ambiguous", details=details)
    return slivers[0]


def handlers(ctx: Context) -> dict[type, Handler]:
    cluster, relay = ctx.cluster, ctx.relay

    def forward(call: Call, sliver: SliverRecord, msg: Message, timeout: float) -> Deferred:
        rec = cluster.registry.nodes[sliver.node]
        if rec.state != "up" or rec.peer is None:
            raise SliceMeshError(f"node {sliver.node} is {rec.state}; cannot reach sliver {sliver.id}", code="node-down")
        relay.forward(call.peer, call.id, sliver.node, rec.peer, msg, timeout)
        return DEFERRED

    def exec_sliver(msg: ExecSliver, call: Call) -> Deferred:
        if not msg.argv:
            raise SliceMeshError("exec needs a command: a non-empty list of strings", code="bad-request")
        sliver = pick_sliver(cluster, call.user(), msg.slice, msg.node, msg.sliver)
        relayed = NodeExec(sliver.id, msg.argv, msg.timeout, stdin=msg.stdin, tty=msg.tty, rows=msg.rows, cols=msg.cols)
        return forward(call, sliver, relayed, msg.timeout + 10)

    def sliver_logs(msg: SliverLogs, call: Call) -> Deferred:
        sliver = pick_sliver(cluster, call.user(), msg.slice, msg.node, msg.sliver)
        return forward(call, sliver, NodeLogs(sliver.id, msg.offset, msg.limit), 15)

    def exec_output(msg: ExecOutput, call: Call) -> None:
        if call.principal is not None and call.principal.kind == "agent":
            relay.on_output(msg, call.peer, call.principal.name)

    def exec_input(msg: ExecInput | ExecResize, call: Call) -> None:
        if call.principal is not None and call.principal.kind != "agent":
            relay.on_input(msg, call.peer)

    return {ExecSliver: exec_sliver, SliverLogs: sliver_logs, ExecOutput: exec_output, ExecInput: exec_input, ExecResize: exec_input}
