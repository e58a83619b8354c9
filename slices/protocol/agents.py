"""Agents and the controller: registration, heartbeats, reports, desired sets.

An agent registers its node, then heartbeats; every reply is the controller's heartbeat
(``Beat``: the generation it wants applied, the period, the liveness threshold, and how many
of the heartbeats that follow may be unanswered ``Pulse`` notices). The
controller pushes a node's whole desired sliver set (``Desired``) whenever it changes and
again when a heartbeat shows the agent behind; the agent answers with a ``Report``.
"""

from __future__ import annotations

from dataclasses import dataclass

from slices.model import IPV4, NODE_NAME, SLICE_NAME, SLIVER_ID, NodeInfo, SliverSpec, SliverStatus, Usage
from slices.protocol.base import Message, message
from slices.wire import fld

MAX_SLIVERS_PER_NODE = 100_000
DESIRED_PART = 1000  # slivers per desired-set message: ~8.5 MiB at the spec's largest sizes, ~0.3 MiB typically


@dataclass(frozen=True, kw_only=True)
class Beat:
    """The controller's heartbeat: what to apply and how often to call again."""

    generation: int = fld(lo=0)
    period: float = fld(lo=0.001, hi=3600.0)
    misses: int = fld(lo=1, hi=1000)
    #: The cluster's identity: an agent whose slivers belong to another one holds orphans.
    cluster: str = fld("", max_len=64)
    #: Orphans the operator chose to destroy (``slicemesh orphans --destroy``).
    drop_orphans: list[str] = fld(factory=list, pattern=SLIVER_ID, max_items=MAX_SLIVERS_PER_NODE)
    #: Heartbeats the agent may send as ``pulse`` notices, unanswered, before it asks again
    #: with a ``heartbeat`` (protocol 2.8); 0, an older controller's: every one is a request.
    pulses: int = fld(0, lo=0, hi=100)
    #: The controller numbers reports (protocol 2.9): one is acknowledged by silence, and a
    #: gap in the numbers is answered ``report-lost``; False, an older controller's: a
    #: report's statuses wait for a heartbeat's answer, as before.
    checks_reports: bool = fld(False)


@message
@dataclass(frozen=True)
class Register(Message):
    """An agent introduces its node and what already runs there."""

    TYPE = "register"
    REPLY = Beat
    SENDER = "agent"
    node: NodeInfo = fld()
    slivers: list[SliverStatus] = fld(factory=list, max_items=MAX_SLIVERS_PER_NODE)
    generation: int = fld(0, lo=0)  # the desired-set generation the agent last applied
    token: str | None = fld(None, max_len=64)  # a one-time enrolment token, for a new key
    cluster: str = fld("", max_len=64)  # the cluster the agent's slivers were made by ("" at first)
    #: Slivers still running from an earlier cluster (its controller's database was lost).
    orphans: list[SliverSpec] = fld(factory=list, max_items=MAX_SLIVERS_PER_NODE)
    #: The agent applies desired sets sent as changes (``Desired.base``, protocol 2.10).
    deltas: bool = False


@message
@dataclass(frozen=True)
class Heartbeat(Message):
    """Periodic proof of life with usage; the reply is the controller's heartbeat."""

    TYPE = "heartbeat"
    REPLY = Beat
    SENDER = "agent"
    node: str = fld(pattern=NODE_NAME)
    generation: int = fld(lo=0)
    slivers: list[SliverStatus] = fld(factory=list, max_items=MAX_SLIVERS_PER_NODE)
    usage: Usage = fld(factory=Usage)
    orphans: list[str] = fld(factory=list, pattern=SLIVER_ID, max_items=MAX_SLIVERS_PER_NODE)  # ids still held as orphans
    reported: int = fld(0, lo=0)  # the number of the last report sent since registering (2.9; 0: none)


@message
@dataclass(frozen=True)
class Pulse(Message):
    """A heartbeat that asks for no answer (protocol 2.8): proof of life and usage, sent in
    place of a ``heartbeat`` while the agent has no change of sliver state to report (and no
    orphans) and the controller allows it (``Beat.pulses``). An answer costs both sides about
    a third of a heartbeat's CPU."""

    TYPE = "pulse"
    REQUEST = False
    SENDER = "agent"
    node: str = fld(pattern=NODE_NAME)
    generation: int = fld(lo=0)
    #: Statuses already acknowledged, sent again for their usage (``Reporter``'s rotation).
    slivers: list[SliverStatus] = fld(factory=list, max_items=MAX_SLIVERS_PER_NODE)
    usage: Usage = fld(factory=Usage)
    reported: int = fld(0, lo=0)  # the number of the last report sent since registering (2.9; 0: none)


@message
@dataclass(frozen=True)
class Report(Message):
    """Actual sliver states right after a reconcile (a notice). A controller that checks
    reports (``Beat.checks_reports``, 2.9) acknowledges one by silence and answers a gap in
    their numbers with ``report-lost``; to an older one, heartbeats repeat it until answered."""

    TYPE = "report"
    REQUEST = False
    SENDER = "agent"
    node: str = fld(pattern=NODE_NAME)
    generation: int = fld(lo=0)
    slivers: list[SliverStatus] = fld(factory=list, max_items=MAX_SLIVERS_PER_NODE)
    #: Slices whose addresses the agent holds out of date (a change came based on a version
    #: it does not have): the controller sends them whole (optional, protocol 2.6).
    peers_stale: list[str] = fld(factory=list, pattern=SLICE_NAME, max_items=MAX_SLIVERS_PER_NODE)
    #: Numbers a reconcile's reports since the node registered, from 1 (2.9); 0: unnumbered.
    seq: int = fld(0, lo=0)
    #: A set came as changes to a generation the agent does not hold: send it whole (2.10).
    resync: bool = False


@dataclass(frozen=True)
class Peer:
    """A sliver this node's slivers may talk to: its slice and its address (docs/networking.md)."""

    sliver: str = fld(pattern=SLIVER_ID)
    slice: str = fld(pattern=SLICE_NAME)
    address: str = fld(pattern=IPV4)


@dataclass(frozen=True, kw_only=True)
class PeerChange:
    """One slice's addresses at ``version``: all of them (``base`` 0), or what changed since
    version ``base`` (``peers`` added or readdressed, ``gone`` removed) (controller/peers.py)."""

    slice: str = fld(pattern=SLICE_NAME)
    base: int = fld(lo=0)
    version: int = fld(lo=1)
    peers: list[Peer] = fld(factory=list, max_items=MAX_SLIVERS_PER_NODE)
    gone: list[str] = fld(factory=list, pattern=SLIVER_ID, max_items=MAX_SLIVERS_PER_NODE)


@message
@dataclass(frozen=True)
class Desired(Message):
    """The node's full desired sliver set at ``generation`` (a notice, resent until applied),
    in ``parts`` messages of at most ``DESIRED_PART`` slivers each; or, to an agent that says
    it takes them (``Register.deltas``), what changed since generation ``base``, in one."""

    TYPE = "desired"
    REQUEST = False
    SENDER = "controller"
    generation: int = fld(lo=0)
    slivers: list[SliverSpec] = fld(factory=list, max_items=MAX_SLIVERS_PER_NODE)
    part: int = fld(0, lo=0, hi=10_000)  # a large set comes in parts, applied once all arrived
    parts: int = fld(1, lo=1, hi=10_000)
    #: Part 0 only (optional, protocol 2.1): every known address of a sliver of a slice with
    #: a sliver on this node, and of open slices when one of them has one here (a controller
    #: before 2.6; a later one sends ``peer_slices`` and ``peer_changes`` instead)...
    peers: list[Peer] = fld(factory=list, max_items=MAX_SLIVERS_PER_NODE)
    #: ...and which of those slices are open to other open slices (``network.open_to_slices``).
    open_slices: list[str] = fld(factory=list, pattern=SLICE_NAME, max_items=MAX_SLIVERS_PER_NODE)
    #: Part 0 only (protocol 2.6): True when the addresses come as ``peer_changes`` of the
    #: slices ``peer_slices`` names, the only ones the node keeps addresses of.
    peer_sets: bool = False
    peer_slices: list[str] = fld(factory=list, pattern=SLICE_NAME, max_items=MAX_SLIVERS_PER_NODE)
    peer_changes: list[PeerChange] = fld(factory=list, max_items=MAX_SLIVERS_PER_NODE)
    #: Protocol 2.10: -1, ``slivers`` is the whole set; else the set is generation ``base``'s
    #: with ``slivers`` added or replaced (by id) and the ids in ``removed`` taken out.
    base: int = fld(-1, lo=-1)
    removed: list[str] = fld(factory=list, pattern=SLIVER_ID, max_items=MAX_SLIVERS_PER_NODE)


@message
@dataclass(frozen=True)
class Goodbye(Message):
    """An agent stopping cleanly: its node shows ``stopped`` (its slivers keep running),
    not a missed-heartbeat ``down``."""

    TYPE = "goodbye"
    REQUEST = False
    SENDER = "agent"
    node: str = fld(pattern=NODE_NAME)
    reason: str = fld("stopped by its operator", kind="text", max_len=256)
