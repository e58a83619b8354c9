"""Named network namespaces without ``ip netns``: made, entered and removed in-process.

A named netns is a bind mount of a namespace file at ``/run/netns/<name>`` (what ``ip netns``
makes, so ``ip netns exec`` and runc's ``path`` find it). Making one through a process costs
milliseconds of process start-up; a short-lived thread that unshares its own network
namespace costs well under one.
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
_libc = ctypes.CDLL(None, use_errno=True)


class NetError(Exception):
    pass


def create_netns(path: Path) -> socket.socket:
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
        remove_netns(path)
        raise NetError(f"netns {path.name}: {os.strerror(err)}")
    sock = out["sock"]
    assert isinstance(sock, socket.socket)
    return sock


def netns_socket(path: Path) -> socket.socket:
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


def remove_netns(path: Path) -> None:
    """Unpin and unlink a named netns; a no-op when it is gone."""
    _libc.umount2(str(path).encode(), MNT_DETACH)
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def rebind_netns(old: Path, new: Path) -> None:
    """Give the netns named ``old`` the name ``new`` (bind it anew, then drop the old pin)."""
    os.close(os.open(new, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))
    if _libc.mount(str(old).encode(), str(new).encode(), b"none", MS_BIND, None) != 0:
        raise NetError(f"netns {new.name}: {os.strerror(ctypes.get_errno())}")
    remove_netns(old)
