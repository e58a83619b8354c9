"""The few rtnetlink requests on a sliver's critical path, encoded by hand.

pyroute2 0.9 runs every request through an asyncio loop and pure-Python message classes:
~3-4 ms of CPU per request here, ~30 ms for a sliver's NIC. The same five requests packed
with ``struct`` and sent on a plain netlink socket cost tens of microseconds each, so a
sliver's start-up waits on runc, not on Python. Everything else (making veths, bridges,
lookups, teardown: off the critical path) stays with pyroute2.

Each function sends one request with ``NLM_F_ACK`` and raises ``OSError`` with the kernel's
errno when it is refused, like ``ip``/``tc`` report it.
"""

from __future__ import annotations

import errno
import itertools
import os
import socket
import struct

NLMSG_ERROR = 2
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK, RTM_NEWADDR, RTM_NEWROUTE, RTM_NEWQDISC = 16, 17, 18, 20, 24, 36
NLM_F_REQUEST, NLM_F_ACK, NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE = 0x1, 0x4, 0x100, 0x200, 0x400
IFLA_IFNAME, IFLA_MASTER, IFLA_LINKINFO, IFLA_NET_NS_FD = 3, 10, 18, 28
IFLA_INFO_KIND, IFLA_INFO_DATA, VETH_INFO_PEER = 1, 2, 1
IFA_ADDRESS, IFA_LOCAL = 1, 2
RTA_GATEWAY = 5
TCA_KIND, TCA_OPTIONS = 1, 2
TCA_TBF_PARMS, TCA_TBF_RATE64, TCA_TBF_BURST = 1, 4, 6
NLA_F_NESTED = 0x8000
IFF_UP = 0x1
RT_TABLE_MAIN, RTPROT_BOOT, RT_SCOPE_UNIVERSE, RTN_UNICAST = 254, 3, 0, 1
TC_H_ROOT = 0xFFFFFFFF
TC_LINKLAYER_ETHERNET = 1
U32_MAX = 0xFFFFFFFF

_seq = itertools.count(1)


def _attr(kind: int, payload: bytes) -> bytes:
    """One netlink attribute, padded to 4 bytes."""
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * (-length % 4)


def _request(sock: socket.socket, kind: int, flags: int, body: bytes, want: int | None = None) -> bytes:
    """Send one request; return the body of the reply message of type ``want`` (if asked)."""
    seq = next(_seq)
    header = struct.pack("=IHHII", 16 + len(body), kind, NLM_F_REQUEST | NLM_F_ACK | flags, seq, 0)
    sock.send(header + body)
    answer = b""
    while True:
        reply = sock.recv(65536)
        offset = 0
        while offset + 16 <= len(reply):
            length, rtype, _flags, rseq, _pid = struct.unpack_from("=IHHII", reply, offset)
            if rseq == seq and rtype == want:
                answer = reply[offset + 16 : offset + length]
            elif rseq == seq and rtype == NLMSG_ERROR:
                code = -struct.unpack_from("=i", reply, offset + 16)[0]
                if code:
                    raise OSError(code, f"rtnetlink: {os.strerror(code)}")
                return answer
            offset += max(length + (-length % 4), 16)


def open_socket() -> socket.socket:
    """A route netlink socket in the calling thread's network namespace."""
    return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)


def link_set(sock: socket.socket, index: int, *, ifname: str | None = None, master: int | None = None, up: bool | None = None) -> None:
    """Rename, enslave and bring up a link in one request: the kernel renames first (a link
    must be down to be renamed), then sets the master, then the flags."""
    flags = IFF_UP if up else 0
    change = IFF_UP if up is not None else 0
    body = _ifinfo(index, flags, change)
    if ifname is not None:
        body += _attr(IFLA_IFNAME, ifname.encode() + b"\0")
    if master is not None:
        body += _attr(IFLA_MASTER, struct.pack("=I", master))
    _request(sock, RTM_NEWLINK, 0, body)


def _ifinfo(index: int = 0, flags: int = 0, change: int = 0) -> bytes:
    return struct.pack("=BxHiII", socket.AF_UNSPEC, 0, index, flags, change)


def veth_add(sock: socket.socket, name: str, peer: str, peer_netns_fd: int) -> None:
    """``ip link add <name> type veth peer name <peer> netns <fd>``."""
    peer_msg = _ifinfo() + _attr(IFLA_IFNAME, peer.encode() + b"\0") + _attr(IFLA_NET_NS_FD, struct.pack("=I", peer_netns_fd))
    info = _attr(IFLA_INFO_KIND, b"veth") + _attr(IFLA_INFO_DATA | NLA_F_NESTED, _attr(VETH_INFO_PEER | NLA_F_NESTED, peer_msg))
    body = _ifinfo() + _attr(IFLA_IFNAME, name.encode() + b"\0") + _attr(IFLA_LINKINFO | NLA_F_NESTED, info)
    _request(sock, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body)


def link_index(sock: socket.socket, name: str) -> int:
    """The index of link ``name`` in the socket's namespace (ENODEV when there is none)."""
    reply = _request(sock, RTM_GETLINK, 0, _ifinfo() + _attr(IFLA_IFNAME, name.encode() + b"\0"), want=RTM_NEWLINK)
    if len(reply) < 16:
        raise OSError(errno.ENODEV, f"rtnetlink: no link {name}")
    index: int = struct.unpack_from("=i", reply, 4)[0]
    return index


def link_del(sock: socket.socket, index: int) -> None:
    """Delete a link (a veth takes its peer with it); ENODEV when it is already gone."""
    _request(sock, RTM_DELLINK, 0, _ifinfo(index))


def ifindex(name: str) -> int | None:
    """Index of a link of this process's network namespace by name (sysfs, no netlink)."""
    try:
        with open(f"/sys/class/net/{name}/ifindex", encoding="ascii") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def addr_add(sock: socket.socket, index: int, address: str, prefixlen: int) -> None:
    raw = socket.inet_aton(address)
    body = struct.pack("=BBBBI", socket.AF_INET, prefixlen, 0, RT_SCOPE_UNIVERSE, index)
    body += _attr(IFA_LOCAL, raw) + _attr(IFA_ADDRESS, raw)
    _request(sock, RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, body)


def default_route_add(sock: socket.socket, gateway: str) -> None:
    body = struct.pack("=BBBBBBBBI", socket.AF_INET, 0, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT, RT_SCOPE_UNIVERSE, RTN_UNICAST, 0)
    body += _attr(RTA_GATEWAY, socket.inet_aton(gateway))
    _request(sock, RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, body)


def tbf_params(bandwidth: int, latency_ms: int = 50) -> tuple[int, int, int]:
    """(rate bytes/s, burst bytes, queue limit bytes) for ``bandwidth`` bits/s: a burst of
    10 ms of traffic but at least 16 KiB (a few MTUs), and ``latency_ms`` of queue."""
    rate = bandwidth // 8
    burst = max(rate // 100, 16 * 1024)
    return rate, burst, rate * latency_ms // 1000 + burst


def tbf_replace(sock: socket.socket, index: int, bandwidth: int, latency_ms: int = 50) -> None:
    """``tc qdisc replace dev <index> root handle 1: tbf rate <bandwidth>bit burst .. latency ..``."""
    if bandwidth <= 0:
        raise OSError(errno.EINVAL, f"bandwidth must be > 0 bits/s, not {bandwidth}")
    rate, burst, limit = tbf_params(bandwidth, latency_ms)
    ratespec = struct.pack("=BBHhHI", 0, TC_LINKLAYER_ETHERNET, 0, 0, 0, min(rate, U32_MAX))
    peak = struct.pack("=BBHhHI", 0, TC_LINKLAYER_ETHERNET, 0, 0, 0, 0)
    opts = _attr(TCA_TBF_PARMS, ratespec + peak + struct.pack("=III", min(limit, U32_MAX), 0, 0))
    opts += _attr(TCA_TBF_BURST, struct.pack("=I", burst))
    if rate > U32_MAX:
        opts += _attr(TCA_TBF_RATE64, struct.pack("=Q", rate))
    body = struct.pack("=BxxxiIII", socket.AF_UNSPEC, index, 0x10000, TC_H_ROOT, 0)
    body += _attr(TCA_KIND, b"tbf\0") + _attr(TCA_OPTIONS | NLA_F_NESTED, opts)
    _request(sock, RTM_NEWQDISC, NLM_F_CREATE | NLM_F_REPLACE, body)
