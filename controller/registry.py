"""The node registry: who is out there, where, with what, and whether it is alive.

Liveness: a node is ``down`` once it has been silent for ``misses`` of the heartbeat periods
it was last told to use, and ``up`` again on its next message. The period grows with the
cluster so the controller receives at most ``rate`` heartbeats a second (as Nomad does).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from slices.model import NodeInfo, Resources, SliverSpec, Usage

log = logging.getLogger(__name__)


#: The fields of a ``NodeRecord`` that its ``nodes`` row shows (rows.node_state_values), besides
#: its slivers and orphans, which are counted: setting one drops the row kept.
SHOWN = frozenset({"info", "state", "admin", "used", "last_seen", "period", "usage"})


@dataclass(slots=True)  # no __dict__ per record: thousands of them
class NodeRecord:
    info: NodeInfo
    state: str
    generation: int  # desired-set generation the controller wants
    registered: float
    last_seen: float
    period: float  # heartbeat period last announced to the node
    applied: int = -1  # generation the agent last reported applying
    reported: int = 0  # the number of the last report had from its agent since it registered (Report.seq)
    peer: bytes | None = None
    last_push: float = 0.0
    pushed: int = -1  # generation of the last set sent; one newer waits until it is applied (Cluster.held_nodes)
    deltas: bool = False  # its agent takes sets as changes (Register.deltas, protocol 2.10)
    sent: dict[str, SliverSpec] | None = field(default=None, repr=False, compare=False)  # the set at ``pushed``, to such an agent
    usage: Usage | None = None
    slivers: set[str] = field(default_factory=set)  # desired sliver ids on this node
    orphans: dict[str, SliverSpec] = field(default_factory=dict)  # run for an earlier cluster, as last reported
    admin: str = "active"  # active | cordoned | draining: what an operator made of it
    used: Resources = field(default_factory=Resources)  # what its slivers hold, overhead included (kept as they come and go)
    down_since: float | None = None  # when it went down or stopped (healing waits a grace period)
    drop_orphans: set[str] = field(default_factory=set)  # an operator chose to destroy these
    address: str = ""  # the IP its agent's connection comes from (the transport's word, not the agent's)
    peers_sent: dict[str, int] = field(default_factory=dict)  # slice -> version of its addresses last sent (peers.py)
    overhead_of: tuple[NodeInfo, dict[str, Resources]] | None = field(default=None, repr=False, compare=False)  # (info, its overheads)
    wire_of: tuple[NodeInfo, bytes, bytes] | None = field(default=None, repr=False, compare=False)  # (info, its place packed as entries and as values: rows.py)
    facts_of: list[Any] | None = field(default=None, repr=False, compare=False)  # [info, its place and facts packed as entries, as values (each once asked for)]: rows.py
    row_of: tuple[int, int, bool, bytes] | None = field(default=None, repr=False, compare=False)  # its nodes row, kept while it shows the same (rows.py)

    def __setattr__(self, key: str, value: object) -> None:
        """Any field a ``nodes`` row shows set (even to an equal value) drops the row kept: a
        listing then looks at no other field of a record whose row it keeps (rows.node_row)."""
        object.__setattr__(self, key, value)
        if key in SHOWN:
            object.__setattr__(self, "row_of", None)

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def overhead(self) -> dict[str, Resources]:
        """Per-sliver extra cost of each isolation kind, as the node's backends say (e.g. a VM's
        QEMU process beside its guest RAM): facts ``overhead.<kind>.<cpu|memory|disk>``.
        Read from the facts once per registration, not once per sliver charged."""
        if self.overhead_of is None or self.overhead_of[0] is not self.info:
            self.overhead_of = (self.info, overheads(self.info))
        return self.overhead_of[1]


def overheads(info: NodeInfo) -> dict[str, Resources]:
    out: dict[str, dict[str, float]] = {}
    for key, value in info.facts.items():
        parts = key.split(".")
        if len(parts) == 3 and parts[0] == "overhead" and parts[2] in ("cpu", "memory", "disk"):
            try:
                amount = float(value)
            except ValueError:
                continue
            if 0 <= amount < 1 << 50:
                out.setdefault(parts[1], {})[parts[2]] = amount
    return {k: Resources(cpu=v.get("cpu", 0.0), memory=int(v.get("memory", 0)), disk=int(v.get("disk", 0))) for k, v in out.items()}


MAX_STRETCH = 8.0  # the most the heartbeat period is stretched while the controller is behind
RELAX = 0.75  # a relaxing stretch's step, and the most a node's told period shrinks in one answer


class Registry:
    def __init__(self, *, period: float, rate: float, misses: int) -> None:
        self.base_period = period
        self.rate = rate
        self.misses = misses
        self.nodes: dict[str, NodeRecord] = {}
        # Nodes whose agents' keys are accepted: each may join and heartbeat at any moment. The
        # period is budgeted for them from the start, so nodes that join early in a cluster's
        # start are not told a period they must keep while thousands more register.
        self.expected = 0
        # Back-pressure: the period is stretched while the controller cannot keep up with the
        # heartbeats (``pace``), so fewer arrive until it can.
        self.stretch = 1.0
        self._paced_at = 0.0
        self._names: list[str] | None = None  # the nodes' names, sorted: kept until one joins or leaves
        self._up = 0  # nodes up: kept by ``add``, ``remove`` and ``mark`` (``ping`` tells it at every call)

    def names(self) -> list[str]:
        """Every node's name in order (``nodes``' pages), sorted once per join or removal, not
        per listing: 10,000 names were 5-40 ms of a listing's first step, the loop held."""
        if self._names is None:
            self._names = sorted(self.nodes)
        return self._names

    def __iter__(self) -> Iterator[NodeRecord]:
        return iter(self.nodes.values())

    def __len__(self) -> int:
        return len(self.nodes)

    def get(self, name: str) -> NodeRecord | None:
        return self.nodes.get(name)

    def up_count(self) -> int:
        """Nodes up now: counted as they change (``mark``), not scanned at every ping (half a
        millisecond per 10,000 nodes: 4% of a loaded controller pinged every 20 ms)."""
        return self._up

    def mark(self, rec: NodeRecord, state: str) -> None:
        """Set the state of ``rec`` (one of the registry's), counting the nodes up."""
        self._up += (state == "up") - (rec.state == "up")
        rec.state = state

    def period(self) -> float:
        """The heartbeat period told to agents: ``unstretched`` times the back-pressure
        ``stretch``."""
        return self.stretch * self.unstretched()

    def unstretched(self) -> float:
        """The period for the cluster's size: its nodes, or the agents it has accepted keys
        for if more."""
        return max(self.base_period, max(len(self.nodes), self.expected) / self.rate)

    def pace(self, behind: float, now: float) -> bool:
        """Stretch or relax the period from how long the agents' queue has gone without being
        emptied (``behind`` seconds); True when it changed. Doubled (up to ``MAX_STRETCH``)
        once the queue has held heartbeats for two periods, when agents would soon count the
        controller silent; relaxed by a quarter once it empties within a tenth of a period.
        At most one change per period: agents learn the new one from their next reply."""
        period = self.period()
        if now - self._paced_at < period:
            return False
        if behind > 2 * period and self.stretch < MAX_STRETCH:
            self.stretch = min(MAX_STRETCH, self.stretch * 2)
        elif behind < period / 10 and self.stretch > 1.0:
            self.stretch = max(1.0, self.stretch * RELAX)
        else:
            return False
        self._paced_at = now
        return True

    def add(self, rec: NodeRecord) -> None:
        old = self.nodes.get(rec.name)
        self._up += (rec.state == "up") - (old is not None and old.state == "up")
        self.nodes[rec.name] = rec
        self._names = None

    def remove(self, name: str) -> None:
        self._up -= self.nodes.pop(name).state == "up"
        self._names = None

    def register(self, info: NodeInfo, peer: bytes, now: float) -> tuple[NodeRecord, bool]:
        """Add or refresh a node; returns (record, whether placement data changed)."""
        rec = self.nodes.get(info.name)
        if rec is None:
            rec = NodeRecord(info=info, state="up", generation=0, registered=now, last_seen=now, period=self.period(), peer=peer)
            self.add(rec)
            rec.period = self.period()
            return rec, True
        same = rec.info == info
        changed = not same or rec.state != "up"
        if not same:  # an equal info is kept: what was packed from it stays valid (rows.py)
            rec.info = info
        rec.peer = peer
        rec.reported = 0  # its agent numbers this registration's reports afresh
        rec.peers_sent.clear()  # an agent that registers is told every slice's addresses whole
        rec.last_seen = now
        self.mark(rec, "up")
        rec.down_since = None
        rec.period = self.period()
        return rec, changed

    def seen(self, rec: NodeRecord, peer: bytes, now: float, *, told: bool = True) -> bool:
        """Record a sign of life; returns True when the node comes back up. ``told``: the
        answer to it tells the node a period (a notice's is not answered: the node keeps the
        period it was told, by which its silence is judged). Today's, but shorter than the
        last one told by a quarter at most: an answer can reach a busy agent late, or after
        it scheduled its next beat by the old period, and three of the new periods must still
        cover one of the old. (Pulses tell no period: without this bound a relaxing stretch
        reached a node in one step, 4 s to 1 s, and hundreds were falsely marked down.)"""
        rec.last_seen = now
        rec.peer = peer
        if told:
            rec.period = max(self.period(), rec.period * RELAX)
        if rec.state != "up":
            self.mark(rec, "up")
            rec.down_since = None
            return True
        return False

    def sweep(self, now: float) -> list[NodeRecord]:
        """Mark silent nodes down; returns the ones that just went down."""
        gone = []
        current = self.period()
        up = 0
        for rec in self.nodes.values():
            # The larger of the period the node was told and today's: while a big cluster is
            # still registering, early nodes were told a short period their hosts cannot keep.
            if rec.state == "up":
                if now - rec.last_seen > max(rec.period, current) * self.misses:
                    rec.state = "down"
                    rec.down_since = now
                    gone.append(rec)
                else:
                    up += 1
        if up != self._up - len(gone):  # a state set without ``mark``: a bug, put right here
            log.warning("nodes up counted %d, found %d: a node's state changed without Registry.mark", self._up - len(gone), up)
        self._up = up
        return gone

    def grace(self, now: float, until: float = 0.0) -> None:
        """After a controller restart nobody has had a chance to heartbeat yet, and agents
        that noticed the outage register again only after their backoff: none is counted
        down before ``until`` (plus the usual window: as if each was last heard of then)."""
        for rec in self.nodes.values():
            rec.last_seen = max(now, until)
            rec.period = self.period()
            if rec.state != "up":
                rec.down_since = now  # healing counts its grace from now, not from before the restart
