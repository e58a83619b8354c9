"""Named network namespaces without ``ip netns``: made, entered and removed in-process.

A named netns is a bind mount of a namespace file at ``/run/netns/<name>`` (what ``ip netns``
makes, so ``ip netns exec`` and runc's ``path`` find it). Making one through a process costs
milliseconds of process start-up; a short-lived thread that unshares its own network
namespace costs well under one. ``pin``/``unpin`` name any namespace that way (userns.py
pins a sliver's user namespace too).

Every netns made or entered for a sliver here gets ``net.ipv4.ping_group_range`` opened to
all groups, so a sliver pings (ICMP datagram sockets) without CAP_NET_RAW. The sysctl belongs
to that netns only. The agent sets it rather than runc's ``linux.sysctl``: runc in a user
namespace cannot (``open /proc/sys/net/ipv4/ping_group_range: permission denied``).
"""

from __future__ import annotations

import ctypes
import os
import socket
import threading
from pathlib import Path

NETNS_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000
MS_BIND = 4096
MNT_DETACH = 2
ENOENT = 2
PING_GROUP_RANGE = Path("/proc/sys/net/ipv4/ping_group_range")
_libc = ctypes.CDLL(None, use_errno=True)


class NetError(Exception):
    pass


def allow_ping() -> None:
    """Let every gid open ICMP echo sockets in the calling thread's netns (only that netns)."""
    PING_GROUP_RANGE.write_text("0 2147483647\n")


def pin(ns_file: str, path: Path) -> None:
    """Keep a namespace alive and named at ``path`` (a bind mount of its nsfs file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))
    if _libc.mount(ns_file.encode(), str(path).encode(), b"none", MS_BIND, None) != 0:
        err = ctypes.get_errno()
        unpin(path)
        raise NetError(f"namespace {path.name}: {os.strerror(err)}")


def unpin(path: Path) -> None:
    """Unpin and unlink a named namespace; a no-op when it is gone."""
    _libc.umount2(str(path).encode(), MNT_DETACH)
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def create_netns(path: Path) -> socket.socket:
    """Create a named netns at ``path`` and return a netlink socket living inside it.

    ``unshare(CLONE_NEWNET)`` in a thread moves only that thread; its namespace is pinned by
    a bind mount and a socket opened there keeps talking to it after the thread is gone.
    """
    out: dict[str, object] = {}

    def body() -> None:
        if _libc.unshare(CLONE_NEWNET) != 0:
            out["err"] = NetError(f"netns {path.name}: {os.strerror(ctypes.get_errno())}")
            return
        try:
            pin(f"/proc/self/task/{threading.get_native_id()}/ns/net", path)
        except (NetError, OSError) as exc:
            out["err"] = exc  # nothing was made (an existing name is left alone)
            return
        try:
            allow_ping()
            out["sock"] = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 0)
        except OSError as exc:
            unpin(path)
            out["err"] = exc

    t = threading.Thread(target=body, name="netns-create")
    t.start()
    t.join()
    sock = out.get("sock")
    if not isinstance(sock, socket.socket):
        err = out.get("err")
        raise err if isinstance(err, NetError) else NetError(f"netns {path.name}: {err}")
    return sock


def netns_socket(path: Path, ping: bool = False) -> socket.socket:
    """A netlink socket inside an existing named netns (setns in a throwaway thread); ``ping``:
    open ``ping_group_range`` there too (a sliver's netns made elsewhere, userns.py)."""
    out: dict[str, object] = {}

    def body() -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            if _libc.setns(fd, CLONE_NEWNET) != 0:
                out["err"] = ctypes.get_errno()
                return
        finally:
            os.close(fd)
        try:
            if ping:
                allow_ping()
        except OSError as exc:
            out["err"] = exc.errno
            return
        out["sock"] = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 0)

    t = threading.Thread(target=body, name="netns-enter")
    t.start()
    t.join()
    sock = out.get("sock")
    if not isinstance(sock, socket.socket):
        raise NetError(f"netns {path.name}: {os.strerror(int(out.get('err', ENOENT)))}")  # type: ignore[call-overload]
    return sock


remove_netns = unpin


def rebind_netns(old: Path, new: Path) -> None:
    """Give the netns named ``old`` the name ``new`` (bind it anew, then drop the old pin)."""
    pin(str(old), new)
    remove_netns(old)
