"""Agents: registration (and enrolment of new keys), heartbeats and reports fold a node's
actual state into the cluster.

A node name is bound to the key it enrolled with: only that key registers, heartbeats or
reports for it, and while the node's agent is connected and alive a second connection
claiming the name is refused (so nobody can cut off a live agent, and two processes with one
key never both run the node's slivers).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from controller import peers
from controller.keyring import Conflict, Pending, Refused
from controller.registry import NodeRecord
from controller.truststore import Principal
from slices.errors import SliceMeshError
from slices.protocol import Beat, Goodbye, Heartbeat, Pulse, Register, Report
from slices.ratelimit import PeerWarnings

if TYPE_CHECKING:
    from controller.api import Call, Context, Handler

log = logging.getLogger(__name__)


class UnknownNode(SliceMeshError):
    code = "unknown-node"
    #: Told even to a notice's sender: a pulse from a connection its node is not registered
    #: from (libzmq reconnected it) would otherwise be dropped unseen until the node is down.
    answers_notices = True


class ReportLost(SliceMeshError):
    code = "report-lost"
    #: Told to a pulse or report, notices: the agent counted the lost report acknowledged.
    answers_notices = True


def lost_report(rec: NodeRecord, seq: int, *, last: bool) -> None:
    """Reports are acknowledged by silence (protocol 2.9), so a gap in their numbers is told:
    ``seq`` is a report's own number (``last``: the number of the last report a heartbeat or
    pulse says was sent). Raises ``ReportLost`` after the record has caught up, so the agent,
    which then sends every status again, is told once."""
    if not seq:
        return  # an older agent's, unnumbered
    expected = rec.reported if last else rec.reported + 1
    if seq > rec.reported:
        rec.reported = seq
    if seq > expected:
        raise ReportLost(f"report {expected} from node {rec.name} never arrived; send every status again")


def handlers(ctx: Context) -> dict[type, Handler]:
    cluster, settings, clock, keyring = ctx.cluster, ctx.settings, ctx.clock, ctx.keyring
    peer_log = PeerWarnings(log)  # refusals a peer can repeat at will: at a bounded rate

    pulses = min(max(settings.heartbeat_pulses, 0), 100)

    def beat(rec: NodeRecord) -> Beat:
        return Beat(
            generation=rec.generation, period=rec.period, misses=settings.liveness_misses, cluster=cluster.store.cluster, drop_orphans=sorted(rec.drop_orphans), pulses=pulses, checks_reports=True
        )

    def enrol(msg: Register, call: Call) -> Principal:
        """An unknown key registering: a valid token enrols it; otherwise it waits as pending."""
        node = msg.node.name
        bound = keyring.named("agent", node)
        if bound is not None:
            peer_log.warning("refusing %s from %s: node %s is enrolled with key %s", call.who, call.address or "?", node, bound.fingerprint)
            raise Conflict(f"node {node!r} is enrolled with another key; if the machine was reinstalled, an operator revokes the old key (slicemesh keys revoke {node})")
        if msg.token is not None:
            principal = keyring.enrol_with_token(msg.token, node, call.key, call.address)
            if principal is not None:
                ctx.record(call, "enrol", f"node {node}", "one-time token", who=principal.who)
                return principal
            raise Refused("the enrolment token is wrong, used or expired (make a new one with `slicemesh keys token`)")
        keyring.note_pending(call.key, node, call.address)
        raise Pending(f"key {call.key[:12]} of node {node} waits for approval: an operator runs `slicemesh keys accept {node}`")

    def claim(rec: NodeRecord | None, call: Call, name: str) -> None:
        """Refuse a second, different connection for a node whose agent is alive."""
        if rec is None or rec.peer is None or rec.peer == call.peer or rec.state != "up":
            return
        if clock() - rec.last_seen <= max(rec.period, cluster.registry.period()) * settings.liveness_misses:
            peer_log.warning("refusing a second connection for node %s from %s: its agent is connected and alive", name, call.address or "?")
            raise Conflict(f"node {name!r} is connected from another connection that is alive; refusing a second agent for it")

    def own(principal: Principal | None, name: str) -> None:
        if principal is None or principal.name != name:
            raise Refused(f"{principal.who if principal else 'an unknown key'} may not speak for node {name!r}")

    def register(msg: Register, call: Call) -> Beat:
        own(call.principal or enrol(msg, call), msg.node.name)
        claim(cluster.registry.get(msg.node.name), call, msg.node.name)
        subnet = msg.node.facts.get(peers.SUBNET_FACT)
        if subnet:
            other = cluster.subnets.clash(msg.node.name, subnet)
            if other is not None:
                log.error("refusing node %s: its sliver subnet %s overlaps node %s's", msg.node.name, subnet, other)
                raise Conflict(f"node {msg.node.name!r}: sliver subnet {subnet} overlaps node {other!r}'s; give each node its own (agent setting subnet)")
            cluster.subnets.add(msg.node.name, subnet)
        rec = cluster.register(msg.node, call.peer, msg.slivers, msg.generation, clock(), call.address)
        rec.deltas = msg.deltas
        ctx.pusher.forget(rec.name)  # a new agent process says again what code it holds
        ctx.swarm.forget(rec.name)
        if msg.cluster == cluster.store.cluster or not msg.cluster:
            rec.orphans = {o.id: o for o in msg.orphans if o.id not in cluster.slivers}
        if rec.orphans:
            log.warning("node %s runs %d slivers for an earlier cluster: `slicemesh orphans` lists them", rec.name, len(rec.orphans))
        return beat(rec)

    def alive(msg: Heartbeat | Pulse, call: Call, *, told: bool) -> NodeRecord | None:
        """A heartbeat's or pulse's node, seen alive with its usage; None if it is not
        registered from this connection. ``told``: the node gets an answer."""
        own(call.principal, msg.node)
        rec = cluster.registry.get(msg.node)
        if rec is None or (rec.peer is not None and rec.peer != call.peer and rec.state == "up"):
            return None
        now = clock()
        cluster.node_seen(rec, call.peer, now, told=told)
        rec.usage = msg.usage
        if msg.generation < rec.generation and now - rec.last_push > rec.period:
            cluster.dirty_nodes[rec.name] = None  # our push was lost or is still queued
        return rec

    def heartbeat(msg: Heartbeat, call: Call) -> Beat:
        rec = alive(msg, call, told=True)
        if rec is None:
            raise UnknownNode(f"node {msg.node!r} is not registered from this connection; register again")
        cluster.apply_report(rec, msg.generation, msg.slivers)
        held = set(msg.orphans)
        for sid in set(rec.orphans) - held:  # destroyed or adopted on the node
            del rec.orphans[sid]
        rec.drop_orphans &= held
        lost_report(rec, msg.reported, last=True)
        return beat(rec)

    def pulse(msg: Pulse, call: Call) -> None:
        """Unanswered, unless the node is not registered from this connection: that is told
        (``unknown-node``, under the pulse's id) and the agent registers again."""
        rec = alive(msg, call, told=False)
        if rec is None:
            raise UnknownNode(f"node {msg.node!r} is not registered from this connection; register again")
        cluster.apply_report(rec, msg.generation, msg.slivers)
        lost_report(rec, msg.reported, last=True)

    def report(msg: Report, call: Call) -> None:
        own(call.principal, msg.node)
        rec = cluster.registry.get(msg.node)
        if rec is None or rec.peer != call.peer:
            return
        cluster.node_seen(rec, call.peer, clock(), told=False)
        cluster.apply_report(rec, msg.generation, msg.slivers)
        if msg.resync:
            cluster.resync(rec)
        peers.resend(cluster, rec, msg.peers_stale, clock())
        lost_report(rec, msg.seq, last=False)

    def goodbye(msg: Goodbye, call: Call) -> None:
        own(call.principal, msg.node)
        rec = cluster.registry.get(msg.node)
        if rec is not None and rec.peer == call.peer:
            cluster.goodbye(rec, msg.reason, clock())

    return {Register: register, Heartbeat: heartbeat, Pulse: pulse, Report: report, Goodbye: goodbye}
