"""Request handlers: one method per message type, registered in one table.

A handler returns the ``Ok`` result map or raises a ``SliceMeshError``; the server turns
either into exactly one reply. Notices (``Report``) return nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from controller.cluster import Cluster, SliverRecord
from controller.relay import DEFERRED, Deferred, Relay
from controller.settings import ControllerSettings
from controller.views import node_view, plan_view, sites_view, slice_summary, slice_view
from slices import __version__
from slices.codec import Envelope
from slices.errors import ProtocolError, SliceMeshError
from slices.messages import (
    PROTOCOL_VERSION,
    CreateSlice,
    DeleteSlice,
    ExecOutput,
    ExecSliver,
    Heartbeat,
    ListNodes,
    ListSites,
    ListSlices,
    ListSlivers,
    Message,
    NodeExec,
    NodeLogs,
    Ping,
    Register,
    RenewSlice,
    Report,
    ShowSlice,
    SliverLogs,
)
from slices.model import NodeInfo, SliverStatus

Handler = Callable[[Envelope, bytes], dict[str, Any] | Deferred | None]

#: Requests that change state: their replies are remembered so a retry is not applied twice.
MUTATING: frozenset[type[Message]] = frozenset({CreateSlice, DeleteSlice, RenewSlice})


class UnknownNode(SliceMeshError):
    code = "unknown-node"


def _statuses(raw: list[Any]) -> list[SliverStatus]:
    return [SliverStatus.from_wire(s) for s in raw]


class Handlers:
    def __init__(self, cluster: Cluster, settings: ControllerSettings, relay: Relay, clock: Callable[[], float] = time.time) -> None:
        self.cluster = cluster
        self.relay = relay
        self.settings = settings
        self.clock = clock

    def table(self) -> dict[type[Message], Handler]:
        return {
            Register: self.register,
            Heartbeat: self.heartbeat,
            Report: self.report,
            CreateSlice: self.create,
            ListSlices: self.list_slices,
            ShowSlice: self.show,
            DeleteSlice: self.delete,
            RenewSlice: self.renew,
            ListNodes: self.nodes,
            ListSites: self.sites,
            ListSlivers: self.slivers,
            Ping: self.ping,
            ExecSliver: self.exec_sliver,
            SliverLogs: self.sliver_logs,
            ExecOutput: self.exec_output,
        }

    # ---- agents -----------------------------------------------------------------------------

    def _beat(self, rec_period: float, generation: int) -> dict[str, Any]:
        return {"generation": generation, "period": rec_period, "misses": self.settings.liveness_misses}

    def register(self, env: Envelope, peer: bytes) -> dict[str, Any]:
        msg = env.msg
        assert isinstance(msg, Register)
        try:
            info = NodeInfo.from_wire(msg.node)
            statuses = _statuses(msg.slivers)
        except ProtocolError as exc:
            raise SliceMeshError(f"registration refused: {exc.reason}", code="bad-request") from None
        rec = self.cluster.register(info, peer, statuses, msg.generation, self.clock())
        return self._beat(rec.period, rec.generation)

    def heartbeat(self, env: Envelope, peer: bytes) -> dict[str, Any]:
        msg = env.msg
        assert isinstance(msg, Heartbeat)
        rec = self.cluster.registry.get(msg.node)
        if rec is None:
            raise UnknownNode(f"node {msg.node!r} is not registered with this controller; register again")
        now = self.clock()
        self.cluster.node_seen(rec, peer, now)
        rec.usage = msg.usage
        try:
            self.cluster.apply_report(rec, msg.generation, _statuses(msg.slivers))
        except ProtocolError as exc:
            raise SliceMeshError(exc.reason, code="bad-request") from None
        if msg.generation < rec.generation and now - rec.last_push > rec.period:
            self.cluster.dirty_nodes.add(rec.name)  # our push was lost or is still queued
        return self._beat(rec.period, rec.generation)

    def report(self, env: Envelope, peer: bytes) -> None:
        msg = env.msg
        assert isinstance(msg, Report)
        rec = self.cluster.registry.get(msg.node)
        if rec is None:
            return
        self.cluster.node_seen(rec, peer, self.clock())
        self.cluster.apply_report(rec, msg.generation, _statuses(msg.slivers))

    # ---- clients ----------------------------------------------------------------------------

    def create(self, env: Envelope, peer: bytes) -> dict[str, Any]:
        msg = env.msg
        assert isinstance(msg, CreateSlice)
        spec, rec, plan = self.cluster.create(msg.spec, msg.owner, env.id, self.clock(), dry_run=msg.dry_run)
        if rec is None:
            return plan_view(self.cluster, plan, spec)
        return slice_view(self.cluster, rec)

    def list_slices(self, env: Envelope, peer: bytes) -> dict[str, Any]:
        return {"slices": [slice_summary(s) for s in sorted(self.cluster.slices.values(), key=lambda s: s.name)]}

    def show(self, env: Envelope, peer: bytes) -> dict[str, Any]:
        msg = env.msg
        assert isinstance(msg, ShowSlice)
        return slice_view(self.cluster, self.cluster.get(msg.name))

    def delete(self, env: Envelope, peer: bytes) -> dict[str, Any]:
        msg = env.msg
        assert isinstance(msg, DeleteSlice)
        sl = self.cluster.delete(msg.name)
        return {"name": sl.name, "slivers": len(sl.slivers)}

    def renew(self, env: Envelope, peer: bytes) -> dict[str, Any]:
        msg = env.msg
        assert isinstance(msg, RenewSlice)
        sl, capped = self.cluster.renew(msg.name, msg.seconds, self.clock())
        return {"name": sl.name, "expires": sl.expires, "capped": capped}

    def nodes(self, env: Envelope, peer: bytes) -> dict[str, Any]:
        return {"nodes": [node_view(self.cluster, r) for r in sorted(self.cluster.registry, key=lambda r: r.name)]}

    def slivers(self, env: Envelope, peer: bytes) -> dict[str, Any]:
        out = []
        for sl in sorted(self.cluster.slivers.values(), key=lambda s: (s.spec.slice, s.node)):
            out.append({"id": sl.id, "slice": sl.spec.slice, "node": sl.node, "state": sl.state, "reason": sl.reason, "cpu": sl.spec.cpu, "memory": sl.spec.memory, "usage": sl.usage})
        return {"slivers": out}

    def sites(self, env: Envelope, peer: bytes) -> dict[str, Any]:
        return {"sites": sites_view(self.cluster)}

    # ---- relayed to the sliver's node --------------------------------------------------------

    def _sliver(self, slice_name: str, node: str | None) -> SliverRecord:
        sl = self.cluster.get(slice_name)
        slivers = [self.cluster.slivers[s] for s in sl.slivers]
        if node is not None:
            slivers = [s for s in slivers if s.node == node]
            if not slivers:
                raise SliceMeshError(f"slice {slice_name!r} has no sliver on node {node!r}", code="not-found")
        if not slivers:
            raise SliceMeshError(f"slice {slice_name!r} has no slivers", code="not-found")
        running = [s for s in slivers if s.state == "running"]
        return (running or slivers)[0]

    def _forward(self, env: Envelope, peer: bytes, sliver: SliverRecord, msg: Message, timeout: float) -> Deferred:
        rec = self.cluster.registry.nodes[sliver.node]
        if rec.state != "up" or rec.peer is None:
            raise SliceMeshError(f"node {sliver.node} is {rec.state}; cannot reach sliver {sliver.id}", code="node-down")
        self.relay.forward(peer, env.id, sliver.node, rec.peer, msg, timeout)
        return DEFERRED

    def exec_sliver(self, env: Envelope, peer: bytes) -> Deferred:
        msg = env.msg
        assert isinstance(msg, ExecSliver)
        if not msg.argv or not all(isinstance(a, str) for a in msg.argv):
            raise SliceMeshError("exec needs a command: a non-empty list of strings", code="bad-request")
        sliver = self._sliver(msg.slice, msg.node)
        timeout = max(1.0, min(msg.timeout, 3600.0))
        return self._forward(env, peer, sliver, NodeExec(sliver.id, msg.argv, timeout), timeout + 10)

    def sliver_logs(self, env: Envelope, peer: bytes) -> Deferred:
        msg = env.msg
        assert isinstance(msg, SliverLogs)
        sliver = self._sliver(msg.slice, msg.node)
        limit = max(1, min(msg.limit, 512 * 1024))
        return self._forward(env, peer, sliver, NodeLogs(sliver.id, msg.offset, limit), 15)

    def exec_output(self, env: Envelope, peer: bytes) -> None:
        msg = env.msg
        assert isinstance(msg, ExecOutput)
        self.relay.on_output(msg)

    def ping(self, env: Envelope, peer: bytes) -> dict[str, Any]:
        return {
            "version": __version__,
            "protocol": PROTOCOL_VERSION,
            "nodes": len(self.cluster.registry),
            "slices": len(self.cluster.slices),
        }
