"""Virtual NICs for container slivers: a node bridge, one netns + veth per sliver, tc shaping.

Topology (all on this host, nothing leaves it):

    root netns:  bridge <br> (first address of the node subnet, e.g. 10.A.B.1/24)
                   |-- host veth of sliver 1  <->  eth0 in netns of sliver 1 (10.A.B.x/24)
                   |-- host veth of sliver 2  <->  eth0 in netns of sliver 2 ...

What a sliver can reach: its own loopback; the bridge address (i.e. the host's root netns,
including anything listening there on 0.0.0.0, so bind host services to specific addresses);
and every other sliver of the same node over the bridge. Its default route points at the
bridge address, but there is no NAT or masquerading, so nothing outside this host is
reachable unless an operator adds NAT for the subnet.

Bandwidth: a token bucket (tbf) at ``bandwidth`` bits/s on the sliver's eth0 (what it sends)
and another on the host end of the veth (what it receives).

Everything goes through netlink in-process (pyroute2) and the named netns is created by a
short-lived thread that unshares its own network namespace: no ``ip``/``tc`` processes, which
was most of the ~68 ms a sliver's network cost with processes (docs: ENVIRONMENT.md).
"""

from __future__ import annotations

import ctypes
import hashlib
import ipaddress
import os
import socket
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

NETNS_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000
MS_BIND = 4096
MNT_DETACH = 2
IFNAMSIZ = 15
ENOENT, EEXIST, ENODEV = 2, 17, 19
_libc = ctypes.CDLL(None, use_errno=True)


def _short_hash(text: str, n: int) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:n]


def bridge_name(prefix: str, node: str) -> str:
    """``<prefix[:8]>-<hash6>``: recognisable by prefix, unique per (prefix, node), <= 15 chars."""
    return f"{prefix[:8]}-{_short_hash(prefix + '/' + node, 6)}"[:IFNAMSIZ]


def veth_name(prefix: str, node: str, sliver: str) -> str:
    return f"{prefix[:5]}{_short_hash(f'{prefix}/{node}/{sliver}', 9)}"[:IFNAMSIZ]


def netns_name(prefix: str, node: str, sliver: str) -> str:
    return f"{prefix}-{_short_hash(node, 6)}-{sliver}"


def default_subnet(prefix: str, node: str) -> str:
    """A /24 in 10/8 derived from the node, so simulated nodes on one host do not collide."""
    h = int(_short_hash(prefix + "/" + node, 8), 16)
    return f"10.{h % 250 + 1}.{(h >> 8) % 256}.0/24"


def position_subnet(k: int) -> str:
    """The /24 of the k-th simulated machine of ``slicemesh sim``: 10.100.0.0/24, 10.100.1.0/24, ...

    The simulation hands the same table to its agents and to its wide-area emulation."""
    return f"10.{100 + k // 256}.{k % 256}.0/24"


def allocate(subnet: str, taken: Iterable[str], sliver: str) -> str:
    """A deterministic free address: start at a hash of the sliver id, probe upwards.

    Deterministic so a re-created sliver tends to get its old address; the caller persists
    the result, which is what re-adoption relies on.
    """
    net = ipaddress.ip_network(subnet)
    hosts = list(net.hosts())[1:]  # the first host address is the bridge's
    used = set(taken)
    start = int(_short_hash(sliver, 8), 16) % len(hosts)
    for i in range(len(hosts)):
        addr = str(hosts[(start + i) % len(hosts)])
        if addr not in used:
            return addr
    raise RuntimeError(f"subnet {subnet} is full")


class NetError(Exception):
    pass


LOOPBACK_INDEX = 1  # lo is always interface 1 in a new network namespace


@dataclass
class _Pair:
    """A sliver's netns with lo up and its veth pair (host end down, eth0 inside), unconfigured."""

    sock: socket.socket  # netlink socket inside the netns (an IPRoute is bound to its thread)
    host_idx: int
    eth_idx: int


def _create_netns(path: Path) -> socket.socket:
    """Create a named netns at ``path`` and return a netlink socket living inside it.

    ``unshare(CLONE_NEWNET)`` in a thread moves only that thread; its namespace is pinned by
    a bind mount and a socket opened there keeps talking to it after the thread is gone.
    """
    NETNS_DIR.mkdir(parents=True, exist_ok=True)
    os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))
    out: dict[str, object] = {}

    def body() -> None:
        if _libc.unshare(CLONE_NEWNET) != 0:
            out["err"] = ctypes.get_errno()
            return
        src = f"/proc/self/task/{threading.get_native_id()}/ns/net".encode()
        if _libc.mount(src, str(path).encode(), b"none", MS_BIND, None) != 0:
            out["err"] = ctypes.get_errno()
            return
        out["sock"] = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 0)

    t = threading.Thread(target=body, name="netns-create")
    t.start()
    t.join()
    if "err" in out:
        err = int(out["err"])  # type: ignore[call-overload]
        _remove_netns(path)
        raise NetError(f"netns {path.name}: {os.strerror(err)}")
    sock = out["sock"]
    assert isinstance(sock, socket.socket)
    return sock


def _netns_socket(path: Path) -> socket.socket:
    """A netlink socket inside an existing named netns (setns in a throwaway thread)."""
    out: dict[str, object] = {}

    def body() -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            if _libc.setns(fd, CLONE_NEWNET) != 0:
                out["err"] = ctypes.get_errno()
                return
        finally:
            os.close(fd)
        out["sock"] = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 0)

    t = threading.Thread(target=body, name="netns-enter")
    t.start()
    t.join()
    sock = out.get("sock")
    if not isinstance(sock, socket.socket):
        raise NetError(f"netns {path.name}: {os.strerror(int(out.get('err', ENOENT)))}")  # type: ignore[call-overload]
    return sock


def _remove_netns(path: Path) -> None:
    _libc.umount2(str(path).encode(), MNT_DETACH)
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def _tbf(ipr: IPRoute, index: int, bandwidth: int) -> None:
    burst = max(bandwidth // 8 // 100, 16 * 1024)  # 10 ms of traffic, at least a few MTUs
    ipr.tc("replace", "tbf", index, "1:", rate=f"{bandwidth}bit", burst=burst, latency="50ms")


class Network:
    """The node's bridge and per-sliver netns/veth pairs, through one root netlink socket."""

    def __init__(self, prefix: str, node: str, subnet: str | None = None) -> None:
        self.prefix, self.node = prefix, node
        self.subnet = subnet or default_subnet(prefix, node)
        net = ipaddress.ip_network(self.subnet)
        self.gateway = str(next(net.hosts()))
        self.prefixlen = net.prefixlen
        self.bridge = bridge_name(prefix, node)
        self._ipr = IPRoute()
        self._lock = threading.Lock()
        # A netns with a veth pair made ahead of need (adding a veth is the slow netlink call);
        # the next sliver takes it over by renaming, so its start-up does not wait for it.
        self._spare: _Pair | None = None
        self._bridge_idx: int | None = None
        self._spare_thread: threading.Thread | None = None
        self._spare_ns = NETNS_DIR / netns_name(prefix, node, "~spare")
        self._spare_if = veth_name(prefix, node, "~spare")

    def close(self) -> None:
        self.release_spare()
        self._ipr.close()

    def prepare_spare_async(self) -> None:
        """Make the next sliver's netns and veth on a background thread (after a create)."""
        if self._spare is not None or (self._spare_thread is not None and self._spare_thread.is_alive()):
            return
        self._spare_thread = threading.Thread(target=self._prepare_spare, name="netns-spare", daemon=True)
        self._spare_thread.start()

    def _prepare_spare(self) -> None:
        with self._lock:
            if self._spare is not None:
                return
            self._teardown_locked(self._spare_ns, self._spare_if)  # a stale one from a killed agent
            try:
                self._spare = self._make_pair(self._spare_ns, self._spare_if)
            except (NetError, NetlinkError, OSError, IndexError):
                self._teardown_locked(self._spare_ns, self._spare_if)  # no spare: the next sliver makes its own

    def release_spare(self) -> None:
        """Remove the prepared spare (at shutdown: nothing of ours outlives the agent but slivers)."""
        if self._spare_thread is not None:
            self._spare_thread.join()
        with self._lock:
            if self._spare is not None:
                self._spare.sock.close()
                self._spare = None
            self._teardown_locked(self._spare_ns, self._spare_if)

    def _take_spare(self, ns_path: Path, host_if: str) -> _Pair | None:
        """Rename the spare to the sliver's names (bind its netns anew, rename the down veth)."""
        pair, self._spare = self._spare, None
        if pair is None:
            return None
        try:
            os.close(os.open(ns_path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))
            if _libc.mount(str(self._spare_ns).encode(), str(ns_path).encode(), b"none", MS_BIND, None) != 0:
                raise NetError(f"netns {ns_path.name}: {os.strerror(ctypes.get_errno())}")
            _remove_netns(self._spare_ns)
            self._ipr.link("set", index=pair.host_idx, ifname=host_if)
        except (NetError, NetlinkError, OSError):
            pair.sock.close()
            self._teardown_locked(self._spare_ns, self._spare_if)
            self._teardown_locked(ns_path, host_if)
            return None
        return pair

    def ensure_bridge(self) -> None:
        """Create the bridge with the gateway address (idempotent); done once at start-up."""
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

    def remove_bridge(self) -> None:
        with self._lock:
            self._bridge_idx = None
            for idx in self._ipr.link_lookup(ifname=self.bridge):
                self._ipr.link("del", index=idx)

    def setup(self, sliver: str, address: str, bandwidth: int | None) -> tuple[str, str]:
        """Netns + veth + address + route + shaping for ``sliver``; returns (netns path, host veth).

        Idempotent: a sliver whose netns and veth already exist is left as it is.
        """
        ns_path = NETNS_DIR / netns_name(self.prefix, self.node, sliver)
        host_if = veth_name(self.prefix, self.node, sliver)
        with self._lock:
            if ns_path.exists() and self._ipr.link_lookup(ifname=host_if):
                return str(ns_path), host_if
            self._teardown_locked(ns_path, host_if)
            pair = self._take_spare(ns_path, host_if)
            try:
                if pair is None:
                    pair = self._make_pair(ns_path, host_if)
                self._configure(pair, address, bandwidth)
            except Exception:
                self._teardown_locked(ns_path, host_if)
                raise
        return str(ns_path), host_if

    def _add_veth(self, ns_path: Path, host_if: str) -> None:
        fd = os.open(ns_path, os.O_RDONLY)
        try:
            self._ipr.link("add", ifname=host_if, kind="veth", peer={"ifname": "eth0", "net_ns_fd": fd})
        finally:
            os.close(fd)

    def _make_pair(self, ns_path: Path, host_if: str) -> _Pair:
        sock = _create_netns(ns_path)
        try:
            self._add_veth(ns_path, host_if)
            with IPRoute(use_socket=sock.dup()) as ns:
                ns.link("set", index=LOOPBACK_INDEX, state="up")
                eth_idx = ns.link_lookup(ifname="eth0")[0]
            return _Pair(sock, self._ipr.link_lookup(ifname=host_if)[0], eth_idx)
        except BaseException:
            sock.close()
            raise

    def _configure(self, pair: _Pair, address: str, bw: int | None) -> None:
        """The sliver-specific part: bridge port, address, route, shaping (a few netlink calls)."""
        try:
            if self._bridge_idx is None:
                found = self._ipr.link_lookup(ifname=self.bridge)
                if not found:
                    raise NetError(f"bridge {self.bridge} is missing")
                self._bridge_idx = found[0]
            self._ipr.link("set", index=pair.host_idx, master=self._bridge_idx, state="up")
            if bw:
                _tbf(self._ipr, pair.host_idx, bw)
            with IPRoute(use_socket=pair.sock) as ns:
                ns.addr("add", index=pair.eth_idx, address=address, prefixlen=self.prefixlen)
                ns.link("set", index=pair.eth_idx, state="up")
                ns.route("add", dst="0.0.0.0/0", gateway=self.gateway)
                if bw:
                    _tbf(ns, pair.eth_idx, bw)
        finally:
            pair.sock.close()

    def teardown(self, sliver: str) -> None:
        """Remove the sliver's veth and netns; a no-op for what is already gone."""
        ns_path = NETNS_DIR / netns_name(self.prefix, self.node, sliver)
        with self._lock:
            self._teardown_locked(ns_path, veth_name(self.prefix, self.node, sliver))

    def _teardown_locked(self, ns_path: Path, host_if: str) -> None:
        for idx in self._ipr.link_lookup(ifname=host_if):
            try:
                self._ipr.link("del", index=idx)  # deletes eth0 in the netns with it
            except NetlinkError as exc:
                if exc.code not in (ENODEV, ENOENT):
                    raise
        _remove_netns(ns_path)

    def address_of(self, sliver: str) -> str | None:
        """The sliver's eth0 address as the kernel has it (for checks after re-adoption)."""
        ns_path = NETNS_DIR / netns_name(self.prefix, self.node, sliver)
        if not ns_path.exists():
            return None
        with IPRoute(use_socket=_netns_socket(ns_path)) as ns:
            for a in ns.get_addr(family=socket.AF_INET, label="eth0"):
                return str(a.get_attr("IFA_ADDRESS"))
        return None

    def counters(self, sliver: str) -> tuple[int, int]:
        """(rx, tx) bytes *as the sliver sees them*: the host end's tx is the sliver's rx."""
        stats = Path("/sys/class/net") / veth_name(self.prefix, self.node, sliver) / "statistics"
        try:
            host_rx = int((stats / "rx_bytes").read_text())
            host_tx = int((stats / "tx_bytes").read_text())
        except (OSError, ValueError):
            return 0, 0
        return host_tx, host_rx
