"""Which sliver addresses each node is told, so its slivers find and may reach their peers.

Agents report each sliver's address (``SliverStatus.address``); the controller tells every
node the addresses of all slivers of the slices it runs a sliver of, wherever they run, with
each desired set (``Desired.peer_changes``). The agent writes them to the slivers'
``/etc/hosts`` and to its firewall's per-slice pairs (node_agent/slicenet.py), so that a
slice's slivers reach each other across nodes and no other slice's do. A node holding a
sliver of a slice open to other slices (``network.open_to_slices``) also learns every open
slice's slivers.

Told as changes: each slice's addresses are *published* with a version (``Published``;
one counter for every slice, so a version is never reused, not even by a slice made again
under the same name, nor after a restart of the controller). A node is sent a slice's
addresses whole the first time, and after that only what changed since the version it was
last sent (``NodeRecord.peers_sent``), from the slice's log of changes. So an address that
changes costs one entry per node of its slice, not the slice's every address again (a slice
of N slivers: N entries, not N^2). An agent that finds a gap (a change based on a version it
does not hold: a set it dropped, a restart) says so (``Report.peers_stale``) and is sent that
slice whole; a node that registers, or that a restarted controller has not told anything
yet, is sent every slice whole. An address that changes does not change any node's
generation: the nodes concerned are only marked to be sent their set again.

Scale: every node of a slice still learns every address of it once, so a slice of N slivers
costs N^2 entries over its making (and again after a controller restart). But the nodes of a
slice are told together and mostly hold the same version, so each change (the whole set, or
what changed since a version) is made and packed once, and telling it to N nodes is N copies
of its bytes (``Published.told``, ``on_wire``); and an address report marks its slice, whose
nodes are marked once at the next push (``mark_readdressed``), not at each of its N reports.
Up to ``MAX_PEERS`` slivers a slice is distributed: at 10,000, its whole set told to its
10,000 nodes is 100 million entries, 4.6 GB and ~0.3 s of the controller's CPU (2 s at 2,000
when each node's was packed for it), sent over many turns (``push_bytes_budget``); one
changed address is 10,000 entries and ~0.1-0.2 s (``slicemesh bench peers``,
docs/benchmarks.md). A bigger slice is not distributed: its slivers get no /etc/hosts
entries for each other and do not reach each other (a slice has one sliver a node).
"""

from __future__ import annotations

import ipaddress
import itertools
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

from slices.codec import Packed, pack_record
from slices.protocol import Peer, PeerChange

if TYPE_CHECKING:
    from controller.cluster import Cluster
    from controller.registry import NodeRecord


MAX_PEERS = 10_000  # slivers of a slice whose addresses are distributed (see above)
SET_PEER_BYTES = 8 * 1024 * 1024  # address changes in one desired set at most (half an agent's default frame cap)
MAX_TOLD = 16  # a slice keeps at most MAX_TOLD + 1 changes made and packed, one per version nodes hold; never drops its whole set
LOG_SLACK = 64  # changes a slice's log keeps beyond its size, so small slices keep a few
#: One counter for every slice, from the clock in microseconds: a version never comes back,
#: not even from the controller's next start (it publishes far fewer than a million a second).
_versions = itertools.count(time.time_ns() // 1000)


@dataclass
class Published:
    """A slice's addresses as last told to nodes, and the changes that led there."""

    version: int
    addresses: dict[str, str]  # sliver -> address
    base: int  # the oldest version a node may hold and still be sent changes from
    log: list[tuple[int, dict[str, str], tuple[str, ...]]] = field(default_factory=list)  # (version, changed, gone), oldest first
    logged: int = 0  # entries in ``log``
    fresh: bool = True  # False once an address may have changed (``invalidate``)
    #: what was made to bring nodes to ``version``, by the version they held (0: nothing, or
    #: too old: the whole set), each with its bytes once a push packed it (``packed``). The
    #: nodes of a slice are told together and mostly hold the same version, so each change is
    #: made and packed once, and telling it to N nodes is N copies of its bytes, not N packings
    told: dict[int, tuple[PeerChange, bytes | None]] = field(default_factory=dict)

    def publish(self, now: dict[str, str]) -> None:
        """Take ``now`` as the slice's addresses: a new version, if they changed."""
        self.fresh = True
        if now == self.addresses:
            return
        changed = {sid: a for sid, a in now.items() if self.addresses.get(sid) != a}
        gone = tuple(sid for sid in self.addresses if sid not in now)
        self.version = next(_versions)
        self.told.clear()  # brought nodes to a version before this one
        self.log.append((self.version, changed, gone))
        self.logged += len(changed) + len(gone)
        self.addresses = now
        while self.log and self.logged > len(now) + LOG_SLACK:  # a node further behind is sent it whole
            version, old_changed, old_gone = self.log.pop(0)
            self.logged -= len(old_changed) + len(old_gone)
            self.base = version

    def change_for(self, name: str, have: int | None) -> PeerChange | None:
        """What a node that holds version ``have`` (None: nothing) must be sent: None when it
        is current, the changes since ``have`` when the log reaches back, else everything."""
        if have == self.version:
            return None
        key = 0 if have is None or have < self.base else have
        kept = self.told.get(key)
        if kept is not None:
            return kept[0]
        change = self._make(name, key)
        self.told[key] = (change, None)
        if len(self.told) > MAX_TOLD + 1:  # bounded: the oldest change goes, never the whole set
            del self.told[next(k for k in self.told if k not in (0, key))]
        return change

    def packed(self, change: PeerChange) -> bytes:
        """``change`` packed (msgpack), once per change this slice keeps (every change it
        made, but the oldest past ``MAX_TOLD``, which another node's change pushed out)."""
        kept = self.told.get(change.base)
        if kept is None or kept[0] is not change:
            return pack_record(change)
        if kept[1] is None:
            kept = self.told[change.base] = (change, pack_record(change))
        assert kept[1] is not None
        return kept[1]

    def _make(self, name: str, have: int) -> PeerChange:
        if have == 0:
            return PeerChange(slice=name, base=0, version=self.version, peers=_peers(name, self.addresses))
        changed: dict[str, str] = {}
        gone: dict[str, None] = {}
        for version, c, g in self.log:
            if version <= have:
                continue
            for sid, a in c.items():
                changed[sid] = a
                gone.pop(sid, None)
            for sid in g:
                changed.pop(sid, None)
                gone[sid] = None
        return PeerChange(slice=name, base=have, version=self.version, peers=_peers(name, changed), gone=list(gone))


def _peers(name: str, addresses: dict[str, str]) -> list[Peer]:
    return [Peer(sliver=sid, slice=name, address=a) for sid, a in addresses.items()]


def open_slices(cluster: Cluster) -> set[str]:
    return {name for name, sl in cluster.slices.items() if sl.spec.open_to_slices}


def distributed(cluster: Cluster, name: str) -> bool:
    sl = cluster.slices.get(name)
    return sl is not None and len(sl.slivers) <= MAX_PEERS


def published(cluster: Cluster, name: str) -> Published | None:
    """The slice's addresses, published anew if one may have changed; None for no slice."""
    pub = cluster.peer_book.get(name)
    if pub is not None and pub.fresh:
        return pub
    sl = cluster.slices.get(name)
    if sl is None:
        cluster.peer_book.pop(name, None)
        return None
    now: dict[str, str] = {}
    for sid in sl.slivers:
        sliver = cluster.slivers.get(sid)
        if sliver is not None and sliver.address:
            now[sid] = sliver.address
    if pub is None:
        version = next(_versions)
        cluster.peer_book[name] = pub = Published(version=version, addresses=now, base=version)
    else:
        pub.publish(now)
    return pub


def invalidate(cluster: Cluster, name: str) -> None:
    """A sliver of ``name`` was added, removed or readdressed: publish again when next asked."""
    pub = cluster.peer_book.get(name)
    if pub is not None:
        pub.fresh = False


def forget(cluster: Cluster, name: str) -> None:
    """The slice is gone: nodes drop its addresses when next sent their set."""
    cluster.peer_book.pop(name, None)


def changes_for(cluster: Cluster, rec: NodeRecord, opened: set[str] | None = None, max_bytes: int = SET_PEER_BYTES) -> tuple[list[str], list[PeerChange], list[str]]:
    """(the slices whose addresses ``rec`` keeps, what it must be told of them since it was
    last told, the open ones among them), and ``rec.peers_sent`` moved on to what is sent;
    ``opened``: the open slices, when the caller pushes to many nodes at once. Changes past
    ``max_bytes`` (packed) wait for the node's next set, which is due at once: a node of many
    big slices must not be sent one set larger than it takes (agents drop frames over 16 MiB)."""
    here = {cluster.slivers[sid].spec.slice for sid in rec.slivers if sid in cluster.slivers}
    opened = open_slices(cluster) if opened is None else opened
    wanted = here | opened if here & opened else here
    names = [name for name in sorted(wanted) if distributed(cluster, name)]
    sent = rec.peers_sent
    changes: list[PeerChange] = []
    size = 0
    for name in names:
        pub = published(cluster, name)
        if pub is None or not (pub.addresses or name in sent):
            continue  # no address to tell a node that holds none (a slice of slivers without addresses, as sim ones)
        change = pub.change_for(name, sent.get(name))
        if change is None:
            continue
        size += len(pub.packed(change))
        if changes and size > max_bytes:
            cluster.dirty_nodes[rec.name] = None  # the rest with its next set
            continue
        changes.append(change)
        sent[name] = pub.version
    for name in set(sent) - set(names):
        del sent[name]
    return names, changes, sorted(opened & wanted)


def resend(cluster: Cluster, rec: NodeRecord, names: list[str], now: float) -> None:
    """The node missed a change of these slices (``Report.peers_stale``): send them whole; at
    once if it was last pushed to a heartbeat period ago or more, else with the first sweep
    after that (``push_due``). An ask is cheap and a whole set is not (up to ``MAX_PEERS``
    addresses a slice), so an agent that asks again and again is sent one a period, not one
    an ask."""
    for name in names:
        rec.peers_sent.pop(name, None)
    if names:
        cluster.peers_due.add(rec.name)
        _push_if_due(cluster, rec, now)


def push_due(cluster: Cluster, now: float) -> None:
    """Sweep: the nodes whose asks for whole sets (``resend``) waited out their period are
    pushed to now."""
    for name in list(cluster.peers_due):
        rec = cluster.registry.get(name)
        if rec is None:
            cluster.peers_due.discard(name)
        else:
            _push_if_due(cluster, rec, now)


def _push_if_due(cluster: Cluster, rec: NodeRecord, now: float) -> None:
    if now - rec.last_push >= rec.period:
        cluster.peers_due.discard(rec.name)
        cluster.dirty_nodes[rec.name] = None


def on_wire(cluster: Cluster, changes: list[PeerChange]) -> list[PeerChange]:
    """``changes`` (from ``changes_for``) as a ``Desired`` carries them: each packed once for
    every node it is told to (``Published.packed``); a ``codec.Packed``, which stands for the
    list in ``encode`` only."""
    if not changes:
        return []  # most sets tell no address changes
    out = Packed()
    for ch in changes:
        pub = cluster.peer_book.get(ch.slice)
        out.append(pub.packed(ch) if pub is not None else pack_record(ch))
    return cast("list[PeerChange]", out)


def address_changed(cluster: Cluster, slice_name: str) -> None:
    """A sliver of ``slice_name`` has a new address: its nodes (with an open slice, the nodes
    of every open slice) are sent their sets again at the next push (``mark_readdressed``).
    Marked once per push, not once per address: a slice of N slivers starting is N addresses,
    and marking its N nodes at each was N^2 (10^8 at 10,000)."""
    invalidate(cluster, slice_name)
    if distributed(cluster, slice_name):
        cluster.readdressed.add(slice_name)


def mark_readdressed(cluster: Cluster) -> None:
    """Before a push: every node that should know a changed address is marked to be sent
    its set (``address_changed``)."""
    if not cluster.readdressed:
        return
    names = set(cluster.readdressed)
    cluster.readdressed.clear()
    if any((sl := cluster.slices.get(name)) is not None and sl.spec.open_to_slices for name in names):
        names |= open_slices(cluster)
    for name in names:
        other = cluster.slices.get(name)
        for sid in other.slivers if other is not None else ():
            sliver = cluster.slivers.get(sid)
            if sliver is not None:
                cluster.dirty_nodes[sliver.node] = None


SUBNET_FACT = "net.subnet"  # what an agent with real slivers says its sliver subnet is


class SubnetIndex:
    """Node sliver subnets by network and by every supernet, so that a registering node whose
    subnet overlaps another node's is found in a few dictionary lookups (two nodes on one
    subnet would give two slivers one address: ``show`` and /etc/hosts would lie)."""

    def __init__(self) -> None:
        self.owner: dict[str, str] = {}  # network -> node
        self.inside: dict[str, str] = {}  # a supernet of some node's network -> that node
        self.of: dict[str, str] = {}  # node -> its network

    def clash(self, node: str, subnet: str) -> str | None:
        """The other node whose subnet overlaps ``subnet``, or None (also for no subnet)."""
        try:
            net = ipaddress.ip_network(subnet, strict=False)
        except ValueError:
            return None
        for plen in range(net.prefixlen + 1):
            other = self.owner.get(str(net.supernet(new_prefix=plen)))
            if other is not None and other != node:
                return other
        other = self.inside.get(str(net))
        return other if other is not None and other != node else None

    def add(self, node: str, subnet: str) -> None:
        net = ipaddress.ip_network(subnet, strict=False)
        if self.of.get(node) == str(net):
            return  # registered again with the same subnet: the usual case
        self.remove(node)
        self.of[node] = str(net)
        self.owner[str(net)] = node
        for plen in range(net.prefixlen):
            self.inside.setdefault(str(net.supernet(new_prefix=plen)), node)

    def remove(self, node: str) -> None:
        old = self.of.pop(node, None)
        if old is not None and self.owner.get(old) == node:
            del self.owner[old]
            self.inside = {k: v for k, v in self.inside.items() if v != node}  # rare: a node's subnet changed
