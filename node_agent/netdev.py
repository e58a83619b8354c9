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
from pathlib import Path

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

NETNS_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000
MS_BIND = 4096
MS_SHARED = 1 << 20
MS_REC = 16384
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

    def close(self) -> None:
        self._ipr.close()

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
            sock = _create_netns(ns_path)
            try:
                self._setup_locked(ns_path, host_if, sock, address, bandwidth)
            except Exception:
                self._teardown_locked(ns_path, host_if)
                raise
        return str(ns_path), host_if

    def _setup_locked(self, ns_path: Path, host_if: str, sock: socket.socket, address: str, bw: int | None) -> None:
        br = self._ipr.link_lookup(ifname=self.bridge)
        if not br:
            raise NetError(f"bridge {self.bridge} is missing")
        fd = os.open(ns_path, os.O_RDONLY)
        try:
            self._ipr.link("add", ifname=host_if, kind="veth", peer={"ifname": "eth0", "net_ns_fd": fd})
        finally:
            os.close(fd)
        hidx = self._ipr.link_lookup(ifname=host_if)[0]
        self._ipr.link("set", index=hidx, master=br[0], state="up")
        if bw:
            _tbf(self._ipr, hidx, bw)
        with IPRoute(use_socket=sock) as ns:
            lo = ns.link_lookup(ifname="lo")[0]
            eth = ns.link_lookup(ifname="eth0")[0]
            ns.link("set", index=lo, state="up")
            ns.addr("add", index=eth, address=address, prefixlen=self.prefixlen)
            ns.link("set", index=eth, state="up")
            ns.route("add", dst="0.0.0.0/0", gateway=self.gateway)
            if bw:
                _tbf(ns, eth, bw)

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
