"""Netns + veth pairs made ahead of need, so a container's start-up only renames and configures one.

Making a named netns and adding a veth into it are the slow part of a container's NIC. A spare pair has lo
and eth0 up and its host end down, unattached and unaddressed: nothing about it depends on a
sliver. The node's ``Warmer`` keeps ``wanted`` of them; ``Network.setup`` takes one, binds its
netns under the sliver's name, renames and attaches the host end and adds the address.

Spare names carry the agent's pid, so a spare left by a killed agent never collides with a
new one; the next agent removes such leftovers by their common stem when it starts.
"""

from __future__ import annotations

import itertools
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from node_agent import rtnl
from node_agent.netns import NETNS_DIR, create_netns, remove_netns

LOOPBACK_INDEX = 1  # lo is always interface 1 in a new network namespace


@dataclass
class Pair:
    """A netns with lo and eth0 up, and the host end of eth0's veth (down)."""

    ns_path: Path
    host_if: str
    sock: socket.socket  # route netlink socket inside the netns (opened there; keeps working)
    host_idx: int
    eth_idx: int


def make_pair(rt: socket.socket, ns_path: Path, host_if: str) -> Pair:
    """Create netns ``ns_path`` holding ``eth0``, the peer of host link ``host_if``."""
    sock = create_netns(ns_path)
    try:
        fd = os.open(ns_path, os.O_RDONLY)
        try:
            rtnl.veth_add(rt, host_if, "eth0", fd)
        finally:
            os.close(fd)
        eth_idx = rtnl.link_index(sock, "eth0")
        rtnl.link_set(sock, LOOPBACK_INDEX, up=True)
        rtnl.link_set(sock, eth_idx, up=True)
        return Pair(ns_path, host_if, sock, rtnl.link_index(rt, host_if), eth_idx)
    except BaseException:
        sock.close()
        raise


def remove_pair(rt: socket.socket, ns_path: Path, host_if: str) -> None:
    """Delete the host link (its peer goes with it) and the netns; a no-op for what is gone."""
    idx = rtnl.ifindex(host_if)
    if idx is not None:
        try:
            rtnl.link_del(rt, idx)
        except FileNotFoundError:
            pass
        except OSError as exc:
            if exc.errno != 19:  # ENODEV: gone meanwhile
                raise
    remove_netns(ns_path)


class SparePairs:
    def __init__(self, stem_ns: str, name_if: Callable[[str], str]) -> None:
        """``stem_ns``: netns name stem of spares; ``name_if(tag)``: a host link name for a tag."""
        self.wanted = 0
        self._stem = stem_ns
        self._name_if = name_if
        self._pairs: list[Pair] = []
        self._lock = threading.Lock()
        self._names = itertools.count()
        self._rt = rtnl.open_socket()  # used under _lock
        self._warm_rt = rtnl.open_socket()  # the warmer thread's own
        for stale in NETNS_DIR.glob(f"{stem_ns}*") if NETNS_DIR.is_dir() else []:
            remove_netns(stale)  # a killed agent's: its veth goes with the netns

    def fill_one(self) -> bool:
        """Warmer job: make one more spare while fewer than ``wanted`` are ready."""
        with self._lock:
            if len(self._pairs) >= self.wanted:
                return False
        tag = f"{os.getpid()}.{next(self._names)}"
        ns_path, host_if = NETNS_DIR / f"{self._stem}{tag}", self._name_if(tag)
        try:
            pair = make_pair(self._warm_rt, ns_path, host_if)
        except BaseException:
            with self._lock:
                remove_pair(self._rt, ns_path, host_if)
            raise
        with self._lock:
            self._pairs.append(pair)
        return True

    def take(self) -> Pair | None:
        with self._lock:
            return self._pairs.pop(0) if self._pairs else None

    def release(self) -> None:
        """Remove every spare (agent shutdown: nothing of ours outlives it but slivers)."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
            for pair in pairs:
                pair.sock.close()
                remove_pair(self._rt, pair.ns_path, pair.host_if)

    def close(self) -> None:
        self.release()
        self._rt.close()
        self._warm_rt.close()
