"""The node's address pool: one IPv4 address of the node subnet per sliver, whatever its kind.

Containers and VMs sit on the same node bridge, so they must draw from one pool; the pool is
a small JSON file in the agent's state directory, so an agent that restarts (or was killed)
gives every running sliver back the address it has, and a destroyed sliver's address is free
again. Written without fsync: after a power loss no sliver runs any more either, and a
killed agent's writes are still in the page cache.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import threading
from collections.abc import Iterable
from pathlib import Path

from slices.statefile import write_atomic


class PoolError(Exception):
    """The pool is full, or its file cannot be read (then nothing is given out)."""


def allocate(subnet: str, taken: Iterable[str], sliver: str) -> str:
    """A deterministic free address: start at a hash of the sliver id, probe upwards.

    Deterministic so a re-created sliver tends to get its old address; the first host
    address is the bridge's and is never given out.
    """
    net = ipaddress.ip_network(subnet)
    # The hosts after the gateway, by arithmetic rather than a list of 254 address objects
    # (0.25 ms on a start-up's path); /31 and /32 have no network and broadcast to skip.
    if net.prefixlen >= net.max_prefixlen - 1:
        first, count = int(net.network_address) + 1, net.num_addresses - 1
    else:
        first, count = int(net.network_address) + 2, net.num_addresses - 3
    if count <= 0:
        raise PoolError(f"subnet {subnet} is full")
    used = set(taken)
    start = int(hashlib.sha1(sliver.encode()).hexdigest()[:8], 16) % count
    for i in range(count):
        addr = str(ipaddress.ip_address(first + (start + i) % count))
        if addr not in used:
            return addr
    raise PoolError(f"subnet {subnet} is full")


class AddressPool:
    """Sliver id -> address, persisted in ``path``; safe to call from several threads."""

    def __init__(self, path: Path, subnet: str) -> None:
        self.path, self.subnet = path, subnet
        self._lock = threading.Lock()
        self._by_sliver: dict[str, str] = {}
        self._unsaved = False
        try:
            doc = json.loads(path.read_text())
            self._by_sliver = {str(k): str(v) for k, v in doc["slivers"].items()}
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, AttributeError) as exc:
            # Guessing would hand a running sliver's address to a new one: refuse instead.
            raise PoolError(f"address pool {path} is unreadable ({exc}); fix or remove it") from None

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        doc = {"subnet": self.subnet, "slivers": self._by_sliver}
        write_atomic(self.path, json.dumps(doc, sort_keys=True).encode(), fsync=False)
        self._unsaved = False

    def allocate(self, sliver_id: str, *, save: bool = True) -> str:
        """The sliver's address, allocating and recording one on first call.

        ``save=False`` leaves the file to a later ``flush``: a batch of slivers writes it
        once, and a container's start-up writes it while runc runs (a sliver killed before
        the flush has no record either, and is removed by name at the agent's restart)."""
        with self._lock:
            have = self._by_sliver.get(sliver_id)
            if have is not None:
                return have
            addr = allocate(self.subnet, self._by_sliver.values(), sliver_id)
            self._by_sliver[sliver_id] = addr
            self._unsaved = True
            if save:
                self._save()
            return addr

    def flush(self) -> None:
        """Write what ``allocate(save=False)`` left unwritten; a no-op when nothing is."""
        with self._lock:
            if self._unsaved:
                self._save()

    def adopt(self, sliver_id: str, address: str) -> None:
        """Record an address a sliver already has (one made before the pool existed)."""
        with self._lock:
            if self._by_sliver.get(sliver_id) != address:
                self._by_sliver[sliver_id] = address
                self._save()

    def get(self, sliver_id: str) -> str | None:
        with self._lock:
            return self._by_sliver.get(sliver_id)

    def release(self, sliver_id: str) -> None:
        """Free the sliver's address; a no-op for one that has none."""
        with self._lock:
            if self._by_sliver.pop(sliver_id, None) is not None:
                self._save()

    def allocated(self) -> dict[str, str]:
        with self._lock:
            return dict(self._by_sliver)


def position_subnet(k: int) -> str:
    """The /24 of the k-th simulated machine of ``slicemesh sim``: 10.100.0.0/24, 10.100.1.0/24, ...

    The simulation hands the same table to its agents and to its wide-area emulation."""
    return f"10.{100 + k // 256}.{k % 256}.0/24"
