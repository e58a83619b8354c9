"""Netns + veth pairs made ahead of need, so a container's start-up only renames and configures one.

Making a named netns and adding a veth into it are the slow part of a container's NIC. A spare pair has lo
and eth0 up and its host end down, unattached and unaddressed: nothing about it depends on a
sliver. The node's ``Warmer`` keeps ``wanted`` of them; ``Network.setup`` takes one, binds its
netns under the sliver's name, renames and attaches the host end and adds the address.

With ``userns`` on, a spare's netns is owned by a user namespace of its own, made with it by
a forked child (userns.py says why runc needs that); the child waits for the id map, which
``Network.setup`` writes once the sliver, and so its uid range, is known.

Spare names carry the agent's pid, so a spare left by a killed agent never collides with a
new one; the next agent removes such leftovers by their common stem when it starts (a killed
agent's waiting children exit by themselves: their pipe's other end is gone).
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
from node_agent.netns import NETNS_DIR, create_netns, netns_socket, pin, remove_netns
from node_agent.userns import PendingUserns, reap

LOOPBACK_INDEX = 1  # lo is always interface 1 in a new network namespace


@dataclass
class Pair:
    """A netns with lo and eth0 up, and the host end of eth0's veth (down)."""

    ns_path: Path
    host_if: str
    sock: socket.socket  # route netlink socket inside the netns (opened there; keeps working)
    host_idx: int
    eth_idx: int
    user: PendingUserns | None = None  # the netns's own user namespace, its id map not yet written


def make_pair(rt: socket.socket, ns_path: Path, host_if: str, userns: bool = False) -> Pair:
    """Create netns ``ns_path`` holding ``eth0``, the peer of host link ``host_if``; with
    ``userns``, inside a user namespace of its own, waiting for its id map."""
    user = None
    if userns:
        user = PendingUserns()
        try:
            pin(user.netns_file, ns_path)
            sock = netns_socket(ns_path, ping=True)
        except BaseException:
            user.abandon()
            remove_netns(ns_path)
            raise
    else:
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
        return Pair(ns_path, host_if, sock, rtnl.link_index(rt, host_if), eth_idx, user)
    except BaseException:
        sock.close()
        if user is not None:
            user.abandon()
        raise


def drop_pair(rt: socket.socket, pair: Pair) -> None:
    """Undo ``make_pair``: the socket, the waiting child, the link and the netns."""
    pair.sock.close()
    if pair.user is not None:
        pair.user.abandon()
    remove_pair(rt, pair.ns_path, pair.host_if)


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
        self.userns = False  # make them inside user namespaces of their own (set before the first fill)
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
            pair = make_pair(self._warm_rt, ns_path, host_if, self.userns)
        except BaseException:
            with self._lock:
                remove_pair(self._rt, ns_path, host_if)
            raise
        with self._lock:
            self._pairs.append(pair)
        return True

    def take(self, userns: bool = False) -> Pair | None:
        """A ready pair, with or without a user namespace as asked; None when there is none."""
        with self._lock:
            pair = next((p for p in self._pairs if (p.user is not None) == userns), None)
            if pair is not None:
                self._pairs.remove(pair)
            return pair

    def release(self) -> None:
        """Remove every spare (agent shutdown: nothing of ours outlives it but slivers)."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
            for pair in pairs:
                drop_pair(self._rt, pair)
        reap(block=True)  # the children of user namespaces handed to slivers, too

    def close(self) -> None:
        self.release()
        self._rt.close()
        self._warm_rt.close()
