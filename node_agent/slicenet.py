"""Who a node's slivers may talk to, and what they know of each other: slices as networks.

The controller tells each agent the addresses of every sliver of the slices it runs a
sliver of, whole the first time and then as changes (``Desired.peer_changes``,
controller/peers.py; ``PeerSets`` below keeps them); the agent adds its own slivers'
addresses (known before they start: the pool is deterministic) and derives:

* ``pairs``: (local sliver, same-slice peer) address pairs, both directions; the node's
  firewall lets a packet between two slivers pass only when its (source, destination) is a
  pair, or when both ends belong to slices open to other slices (``open``). Slivers the
  agent manages (``managed``) are refused everything else to and from other slivers;
* ``hosts(sliver)``: the sliver's ``/etc/hosts``: localhost, itself, and every peer of its
  slice by sliver id (what ``slicemesh show`` lists), so ``ping pair-1a2b3c4d`` works;
* ``resolv_conf()``: the nameservers a sliver uses (``sliver_resolvers``, or the host's).

Pure but for ``host_nameservers`` (reads the host's resolv.conf), so it is unit-tested.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from node_agent.naming import hostname_for
from slices.protocol import Peer, PeerChange

HOST_RESOLV = Path("/etc/resolv.conf")
LOCALHOST = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"


def host_nameservers(path: Path = HOST_RESOLV) -> list[str]:
    """The host's IPv4 nameservers a sliver can use: loopback ones (a local stub such as
    systemd-resolved's 127.0.0.53) would be the sliver's own loopback, so they are left out."""
    try:
        text = path.read_text()
    except OSError:
        return []
    out = []
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "nameserver":
            try:
                addr = ipaddress.ip_address(words[1])
            except ValueError:
                continue
            if addr.version == 4 and not addr.is_loopback:
                out.append(str(addr))
    return out


def check_resolvers(entries: Iterable[str]) -> tuple[str, ...]:
    """``sliver_resolvers`` as IPv4 addresses; a clear error for anything else."""
    out = []
    for i, raw in enumerate(entries):
        try:
            addr = ipaddress.ip_address(str(raw).strip())
        except ValueError:
            raise ValueError(f"sliver_resolvers[{i}]: {raw!r} is not an IP address") from None
        if addr.version != 4:
            raise ValueError(f"sliver_resolvers[{i}]: {raw!r}: slivers have IPv4 only")
        out.append(str(addr))
    return tuple(out)


@dataclass
class PeerSets:
    """The addresses of each slice the node keeps, with the version each was last told at
    (0: not known, as after a restart: the first change must then be a whole set)."""

    sets: dict[str, tuple[int, dict[str, str]]] = field(default_factory=dict)  # slice -> (version, sliver -> address)

    @classmethod
    def of(cls, peers: Iterable[Peer]) -> PeerSets:
        """Sets rebuilt from a flat list (the agent's cache), at version 0."""
        sets: dict[str, tuple[int, dict[str, str]]] = {}
        for p in peers:
            sets.setdefault(p.slice, (0, {}))[1][p.sliver] = p.address
        return cls(sets)

    def apply(self, slices: Sequence[str], changes: Sequence[PeerChange]) -> list[str]:
        """Keep ``slices`` only, and apply ``changes``; returns the slices a change could not
        be applied to (based on a version this node does not hold: they stay as they were,
        and the controller is asked for them whole)."""
        wanted = set(slices)  # a slice not in ``sets`` is as one at version 0 with no member
        sets = {name: held for name, held in self.sets.items() if name in wanted}
        stale: list[str] = []
        for ch in changes:
            if ch.slice not in wanted:
                continue
            version, members = sets.get(ch.slice, (0, {}))
            if ch.base == 0:
                members = {}
            elif ch.base != version:
                stale.append(ch.slice)
                continue
            else:
                members = dict(members)
            for p in ch.peers:
                members[p.sliver] = p.address
            for sid in ch.gone:
                members.pop(sid, None)
            sets[ch.slice] = (ch.version, members)
        self.sets = sets
        return stale

    def peers(self) -> list[Peer]:
        return [Peer(sliver=sid, slice=name, address=a) for name, (_, members) in sorted(self.sets.items()) for sid, a in sorted(members.items())]


@dataclass
class SliceNet:
    """The node's current view; ``update`` replaces it and says whether anything changed."""

    resolvers: tuple[str, ...] = ()
    #: sliver id -> (slice, address): the controller's peers plus this node's own slivers
    members: dict[str, tuple[str, str]] = field(default_factory=dict)
    local: dict[str, tuple[str, str]] = field(default_factory=dict)
    open_slices: frozenset[str] = frozenset()

    def update(self, peers: Sequence[Peer], open_slices: Iterable[str], local: Mapping[str, tuple[str, str]]) -> bool:
        members = {p.sliver: (p.slice, p.address) for p in peers}
        members.update(local)  # our own pool is the truth for our slivers
        before = (self.members, self.local, self.open_slices)
        self.members, self.local, self.open_slices = members, dict(local), frozenset(open_slices)
        return before != (self.members, self.local, self.open_slices)

    def managed(self) -> set[str]:
        return {addr for _, addr in self.local.values()}

    def pairs(self) -> set[tuple[str, str]]:
        by_slice: dict[str, set[str]] = {}
        for slice_name, addr in self.members.values():
            by_slice.setdefault(slice_name, set()).add(addr)
        out = set()
        for slice_name, addr in self.local.values():
            for other in by_slice.get(slice_name, ()):
                if other != addr:
                    out |= {(addr, other), (other, addr)}
        return out

    def open_addresses(self) -> set[str]:
        return {addr for slice_name, addr in self.members.values() if slice_name in self.open_slices}

    def hosts(self, sliver: str, slice_name: str, address: str) -> str:
        """``/etc/hosts`` of ``sliver``: itself (also as its hostname, the slice name) first."""
        lines = [LOCALHOST, f"{address}\t{sliver} {hostname_for(slice_name)}\n"]
        for sid, (other_slice, addr) in sorted(self.members.items()):
            if other_slice == slice_name and sid != sliver:
                lines.append(f"{addr}\t{sid}\n")
        return "".join(lines)

    def resolv_conf(self) -> str:
        servers = self.resolvers or tuple(host_nameservers())
        if not servers:
            return "# no nameserver: set sliver_resolvers in the agent's settings\n"
        return "".join(f"nameserver {s}\n" for s in servers)

    def etc_files(self, sliver: str, slice_name: str, address: str) -> dict[str, str]:
        """What the agent writes into a container sliver's root (relative paths)."""
        return {"etc/hosts": self.hosts(sliver, slice_name, address), "etc/resolv.conf": self.resolv_conf()}
