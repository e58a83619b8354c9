"""Which sliver addresses each node is told, so its slivers find and may reach their peers.

Agents report each sliver's address (``SliverStatus.address``); the controller hands every
node the addresses of all slivers of the slices it runs a sliver of, wherever they run, with
each desired set (``Desired.peers``). The agent writes them to the slivers' ``/etc/hosts``
and to its firewall's per-slice pairs (node_agent/slicenet.py), so that a slice's slivers
reach each other across nodes and no other slice's do. A node holding a sliver of a slice
open to other slices (``network.open_to_slices``) also learns every open slice's slivers.

An address that changes (a sliver started, or moved to another node) does not change any
node's generation: the nodes concerned are only marked to be sent their set again.

Scale: every node of a slice learns every address of it, so a slice of N slivers costs N^2
entries each time its addresses change (a sliver on each of 5,000 nodes: 25 million entries
per round, which stalled the controller for minutes in ``bench responsiveness``). Until
peers travel as deltas, a slice of more than ``MAX_PEERS`` slivers is not distributed: its
slivers get no /etc/hosts entries for each other and reach each other only on the same node
(docs/networking.md). ``Cluster`` keeps each slice's addresses, so a push costs the peers it
sends, not a walk over every sliver.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

from slices.protocol import Peer

if TYPE_CHECKING:
    from controller.cluster import Cluster
    from controller.registry import NodeRecord


MAX_PEERS = 256  # slivers of a slice whose addresses are distributed (see above)


def open_slices(cluster: Cluster) -> set[str]:
    return {name for name, sl in cluster.slices.items() if sl.spec.open_to_slices}


def distributed(cluster: Cluster, name: str) -> bool:
    sl = cluster.slices.get(name)
    return sl is not None and len(sl.slivers) <= MAX_PEERS


def slice_peers(cluster: Cluster, name: str) -> list[Peer]:
    """The known addresses of a slice's slivers, kept until one of them changes."""
    cached = cluster.peer_cache.get(name)
    if cached is None:
        sl = cluster.slices.get(name)
        cached = []
        for sid in sl.slivers if sl is not None else ():
            sliver = cluster.slivers.get(sid)
            if sliver is not None and sliver.address:
                cached.append(Peer(sliver=sid, slice=name, address=sliver.address))
        cluster.peer_cache[name] = cached
    return cached


def peers_for(cluster: Cluster, rec: NodeRecord, opened: set[str] | None = None) -> tuple[list[Peer], list[str]]:
    """(every known address of a sliver that ``rec``'s slivers may reach, the open slices);
    ``opened``: the open slices, when the caller pushes to many nodes at once."""
    here = {cluster.slivers[sid].spec.slice for sid in rec.slivers if sid in cluster.slivers}
    opened = open_slices(cluster) if opened is None else opened
    wanted = here | opened if here & opened else here
    peers: list[Peer] = []
    for name in sorted(wanted):
        if distributed(cluster, name):
            peers.extend(slice_peers(cluster, name))
    return peers, sorted(opened & wanted)


def address_changed(cluster: Cluster, slice_name: str) -> None:
    """A sliver of ``slice_name`` has a new address: send every node that should know it its
    set again (the slice's nodes; with an open slice, the nodes of every open slice)."""
    cluster.peer_cache.pop(slice_name, None)
    if not distributed(cluster, slice_name):
        return  # too big to distribute: nobody is told
    names = {slice_name}
    sl = cluster.slices.get(slice_name)
    if sl is not None and sl.spec.open_to_slices:
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
