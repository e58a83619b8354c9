"""Virtual NICs for slivers: a node bridge; per container a netns + veth, per VM a TAP; tc shaping.

Topology (all on this host, nothing leaves it):

    root netns:  bridge <br> (first address of the node subnet, e.g. 10.A.B.1/24)
                   |-- host veth of sliver 1  <->  eth0 in netns of sliver 1 (10.A.B.x/24)
                   |-- host veth of sliver 2  <->  eth0 in netns of sliver 2 ...
                   |-- TAP of VM sliver 3     <->  the guest's NIC (QEMU; the guest sets 10.A.B.y)

What a sliver can reach, container or VM alike: its own loopback and, over the bridge, the
slivers of its own slice (and of other open slices) on this node. Its default route points at
the bridge address, which is the host; the node's nftables tables (firewall.py, installed
before the bridge is made, removed with it) refuse new connections from the bridge to any host
address but the services the operator allows, keep other slices' slivers apart on the bridge,
tie each sliver's port to its address, and pass what is routed through the host only to
slivers of the same slice and, with ``nat`` (``sliver_nat``), masqueraded to the world
(docs/networking.md).

With ``userns`` on, a container's netns belongs to a user namespace of its own (userns.py
says why), made with the spare pair; ``setup`` writes its id map for the sliver's ``host_id``
and pins it at ``userns_path``.

Bandwidth: a token bucket (tbf) at ``bandwidth`` bits/s on the sliver's eth0 (what it sends)
and another on the host end of the veth (what it receives); a VM's TAP the same way through
an IFB device (tapdev.py).

Everything is in-process, no ``ip``/``tc`` processes (they were most of the ~68 ms a sliver's
network cost, docs: ENVIRONMENT.md): named netns by a thread that unshares its own (netns.py);
what a sliver's start-up does, and veths, as hand-encoded rtnetlink requests (rtnl.py: pyroute2
0.9 spends milliseconds of Python per request); the bridge, IFBs and the TAP's ingress filter,
made rarely and off that path, through pyroute2. Spare netns + veth pairs are kept ready by
the node's warmer (vethpool.py).
"""

from __future__ import annotations

import hashlib
import ipaddress
import socket
import threading
from pathlib import Path

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from node_agent import firewall, rtnl
from node_agent.firewall import HostService
from node_agent.netns import NETNS_DIR, NetError, netns_socket, rebind_netns, unpin
from node_agent.tapdev import create_persistent_tap, redirect_ingress
from node_agent.userns import USERNS_DIR, IdMap
from node_agent.vethpool import Pair, SparePairs, drop_pair, make_pair, remove_pair

IFNAMSIZ = 15
ENOENT, EEXIST, ENODEV = 2, 17, 19


def _short_hash(text: str, n: int) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:n]


def bridge_name(prefix: str, node: str) -> str:
    """``<prefix[:8]>-<hash6>``: recognisable by prefix, unique per (prefix, node), <= 15 chars."""
    return f"{prefix[:8]}-{_short_hash(prefix + '/' + node, 6)}"[:IFNAMSIZ]


def veth_name(prefix: str, node: str, sliver: str) -> str:
    return f"{prefix[:5]}{_short_hash(f'{prefix}/{node}/{sliver}', 9)}"[:IFNAMSIZ]


def tap_name(prefix: str, node: str, sliver: str) -> str:
    return veth_name(prefix, node, f"tap/{sliver}")


def ifb_name(prefix: str, node: str, sliver: str) -> str:
    """The IFB that shapes what a VM sends (its TAP's ingress is redirected there)."""
    return veth_name(prefix, node, f"ifb/{sliver}")


def netns_name(prefix: str, node: str, sliver: str) -> str:
    return f"{prefix}-{_short_hash(node, 6)}-{sliver}"


def userns_path(prefix: str, node: str, sliver: str) -> Path:
    """Where a container sliver's user namespace is pinned (runc joins it by this path)."""
    return USERNS_DIR / netns_name(prefix, node, sliver)


def default_subnet(prefix: str, node: str) -> str:
    """A /24 in 10/8 derived from the node, so simulated nodes on one host do not collide."""
    h = int(_short_hash(prefix + "/" + node, 8), 16)
    return f"10.{h % 250 + 1}.{(h >> 8) % 256}.0/24"


class Network:
    """The node's bridge, its firewall and per-sliver NICs: netns + veth for containers, TAPs for VMs.

    A sliver's start-up takes a spare pair (vethpool.py) and configures it with a handful of
    hand-encoded netlink requests (rtnl.py) on one root socket; pyroute2 only makes things
    (bridge, veths, IFBs) off that path, through the one ``IPRoute`` guarded by ``_lock``.
    ``host_access``: what slivers may reach on the host (firewall.py); ``userns``: spare pairs
    are made inside user namespaces of their own.
    """

    def __init__(
        self,
        prefix: str,
        node: str,
        subnet: str | None = None,
        *,
        host_access: tuple[HostService, ...] = firewall.DEFAULT_SERVICES,
        userns: bool = False,
        nat: bool = False,
    ) -> None:
        self.prefix, self.node, self.nat = prefix, node, nat
        self.host_access = host_access
        self.subnet = subnet or default_subnet(prefix, node)
        net = ipaddress.ip_network(self.subnet)
        self.gateway = str(next(net.hosts()))
        self.prefixlen = net.prefixlen
        self.bridge = bridge_name(prefix, node)
        self._ipr = IPRoute()
        self._rt = rtnl.open_socket()
        self._lock = threading.Lock()
        self._bridge_idx: int | None = None
        self.spares = SparePairs(netns_name(prefix, node, "~spare"), lambda tag: veth_name(prefix, node, f"~spare{tag}"))
        self.spares.userns = userns

    def close(self) -> None:
        self.spares.close()
        self._ipr.close()
        self._rt.close()

    def ensure_bridge(self) -> None:
        """Install the node's firewall, then create the bridge with the gateway address.

        Idempotent; done once at start-up. The firewall first, so no sliver is ever attached
        to a bridge whose host is open to it (the rules are replaced atomically on a restart;
        the slice and port sets keep their elements until the agent writes them again).
        """
        self.install_firewall()
        with self._lock:
            if not self._ipr.link_lookup(ifname=self.bridge):
                try:
                    self._ipr.link("add", ifname=self.bridge, kind="bridge")
                except NetlinkError as exc:
                    if exc.code != EEXIST:
                        raise
            idx = self._ipr.link_lookup(ifname=self.bridge)[0]
            have = {a.get_attr("IFA_ADDRESS") for a in self._ipr.get_addr(index=idx)}
            if self.gateway not in have:
                self._ipr.addr("add", index=idx, address=self.gateway, prefixlen=self.prefixlen)
            self._ipr.link("set", index=idx, state="up")
        if self.nat:  # IPv4 forwards by the incoming interface: the bridge's own switch
            Path(f"/proc/sys/net/ipv4/conf/{self.bridge}/forwarding").write_text("1\n")

    def install_firewall(self) -> None:
        """The node's tables, made or their rules replaced (firewall.install)."""
        firewall.install(self.bridge, self.gateway, self.host_access, subnet=self.subnet, nat=self.nat)

    def remove_bridge(self) -> None:
        """Remove the bridge, then its firewall table (the node is forgotten)."""
        with self._lock:
            self._bridge_idx = None
            for idx in self._ipr.link_lookup(ifname=self.bridge):
                self._ipr.link("del", index=idx)
        firewall.remove(self.bridge)

    def ports(self, sliver: str) -> tuple[str, str]:
        """The bridge ports a sliver may have: its veth's host end (a container), its TAP (a VM)."""
        return veth_name(self.prefix, self.node, sliver), tap_name(self.prefix, self.node, sliver)

    def setup(self, sliver: str, address: str, bandwidth: int | None, host_id: int | None = None) -> tuple[str, str]:
        """Netns + veth + address + route + shaping for ``sliver``; returns (netns path, host veth).

        ``host_id``: the netns belongs to the sliver's own user namespace, whose ids 0..65535
        are host ids ``host_id``..; it is pinned at ``userns_path`` (``idmap`` names it).
        Idempotent: a sliver whose netns and veth (and user namespace) exist is left as it is.
        """
        ns_path = NETNS_DIR / netns_name(self.prefix, self.node, sliver)
        user_path = userns_path(self.prefix, self.node, sliver)
        host_if = veth_name(self.prefix, self.node, sliver)
        with self._lock:
            if ns_path.exists() and rtnl.ifindex(host_if) is not None and (host_id is None or user_path.exists()):
                return str(ns_path), host_if
            remove_pair(self._rt, ns_path, host_if)
            unpin(user_path)
            pair = self.spares.take(userns=host_id is not None)
            try:
                if pair is not None:
                    rebind_netns(pair.ns_path, ns_path)
                    pair.ns_path = ns_path
                else:
                    pair = make_pair(self._rt, ns_path, host_if, userns=host_id is not None)
                if pair.user is not None:
                    assert host_id is not None
                    pair.user.finish(host_id, user_path)
                self._configure(pair, host_if, address, bandwidth)
            except Exception:
                if pair is not None:
                    drop_pair(self._rt, pair)
                remove_pair(self._rt, ns_path, host_if)
                unpin(user_path)
                raise
        return str(ns_path), host_if

    def idmap(self, sliver: str, host_id: int) -> IdMap:
        """The sliver's user namespace as ``setup`` pinned it."""
        return IdMap(userns_path(self.prefix, self.node, sliver), host_id)

    def _bridge_index(self) -> int:
        if self._bridge_idx is None:
            self._bridge_idx = rtnl.ifindex(self.bridge)
            if self._bridge_idx is None:
                raise NetError(f"bridge {self.bridge} is missing")
        return self._bridge_idx

    def _configure(self, pair: Pair, host_if: str, address: str, bw: int | None) -> None:
        """The sliver-specific part: name, bridge port, address, route, shaping (five requests)."""
        try:
            rtnl.link_set(self._rt, pair.host_idx, ifname=None if pair.host_if == host_if else host_if, master=self._bridge_index(), up=True)
            pair.host_if = host_if
            if bw:
                rtnl.tbf_replace(self._rt, pair.host_idx, bw)  # what the sliver receives
            rtnl.addr_add(pair.sock, pair.eth_idx, address, self.prefixlen)
            rtnl.default_route_add(pair.sock, self.gateway)
            if bw:
                rtnl.tbf_replace(pair.sock, pair.eth_idx, bw)  # what it sends
        finally:
            pair.sock.close()

    def teardown(self, sliver: str) -> None:
        """Remove the sliver's veth, netns and user namespace; a no-op for what is already gone."""
        with self._lock:
            remove_pair(self._rt, NETNS_DIR / netns_name(self.prefix, self.node, sliver), veth_name(self.prefix, self.node, sliver))
            unpin(userns_path(self.prefix, self.node, sliver))

    def _delete_links(self, *names: str) -> None:
        for name in names:
            idx = rtnl.ifindex(name)
            if idx is not None:
                try:
                    rtnl.link_del(self._rt, idx)
                except OSError as exc:
                    if exc.errno not in (ENODEV, ENOENT):
                        raise

    def setup_tap(self, sliver: str, address: str, bandwidth: int | None) -> str:
        """A TAP for a VM sliver on the bridge, up and shaped; returns its name for QEMU.

        ``address`` is the guest's own (the guest configures it; the host end has none): it
        is only checked to be a sliver address of this subnet. Idempotent like ``setup``.
        """
        net = ipaddress.ip_network(self.subnet)
        try:
            ok = ipaddress.ip_address(address) in net and address not in (self.gateway, str(net.broadcast_address))
        except ValueError:
            ok = False
        if not ok:
            raise NetError(f"{address!r} is not a sliver address of {self.subnet}")
        tap, ifb = tap_name(self.prefix, self.node, sliver), ifb_name(self.prefix, self.node, sliver)
        with self._lock:
            if rtnl.ifindex(tap) is not None and (not bandwidth or rtnl.ifindex(ifb) is not None):
                return tap
            self._delete_links(tap, ifb)
            try:
                create_persistent_tap(tap)
                idx = self._ipr.link_lookup(ifname=tap)[0]
                rtnl.link_set(self._rt, idx, master=self._bridge_index(), up=True)
                if bandwidth:
                    rtnl.tbf_replace(self._rt, idx, bandwidth)  # what the guest receives
                    self._ipr.link("add", ifname=ifb, kind="ifb")
                    ifb_idx = self._ipr.link_lookup(ifname=ifb)[0]
                    rtnl.link_set(self._rt, ifb_idx, up=True)
                    rtnl.tbf_replace(self._rt, ifb_idx, bandwidth)  # what the guest sends
                    redirect_ingress(self._ipr, idx, ifb_idx)
            except Exception:
                self._delete_links(tap, ifb)
                raise
        return tap

    def teardown_tap(self, sliver: str) -> None:
        """Remove the sliver's TAP and IFB; a no-op for what is already gone."""
        with self._lock:
            self._delete_links(tap_name(self.prefix, self.node, sliver), ifb_name(self.prefix, self.node, sliver))

    def address_of(self, sliver: str) -> str | None:
        """The sliver's eth0 address as the kernel has it (for checks after re-adoption)."""
        ns_path = NETNS_DIR / netns_name(self.prefix, self.node, sliver)
        if not ns_path.exists():
            return None
        with IPRoute(use_socket=netns_socket(ns_path)) as ns:
            for a in ns.get_addr(family=socket.AF_INET, label="eth0"):
                return str(a.get_attr("IFA_ADDRESS"))
        return None

    def counters(self, sliver: str) -> tuple[int, int]:
        """(rx, tx) bytes *as the sliver sees them*: the host end's tx is the sliver's rx.

        The host end is the container's veth or, when it has none, the VM's TAP."""
        stats = Path("/sys/class/net") / veth_name(self.prefix, self.node, sliver) / "statistics"
        if not stats.is_dir():
            stats = Path("/sys/class/net") / tap_name(self.prefix, self.node, sliver) / "statistics"
        try:
            host_rx = int((stats / "rx_bytes").read_text())
            host_tx = int((stats / "tx_bytes").read_text())
        except (OSError, ValueError):
            return 0, 0
        return host_tx, host_rx
