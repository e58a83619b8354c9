"""Where a node pulling a code bundle gets it from: the controller, or a peer agent that holds
it (docs/code.md, "Fetched from peers").

Pure bookkeeping, no I/O: ``api/code.py`` asks ``route`` at each fetch that starts a bundle
and sends what it says.

- A node **holds** a bundle once its agent said so (``CodeAck(held=True)``, sent after the
  bundle arrived and hashed to its name, by whatever path), and until it says it no longer
  does, goes down or away, or fails to send it to a peer.
- A fetch that offers a port goes to the **least busy holder** with a free slot (``slots``
  sends at a time each); the controller sends bytes itself only when no holder is free.
- The controller sends one bundle to at most ``seeds`` nodes at a time while peers can take
  over (holders exist or fetches are under way): the others **wait** and ask again (at
  most ``ASKS_PER_SECOND`` asks a second over all waiting for one bundle). So a
  bundle spreads as a tree, the controller sending a few copies and each holder a few more,
  instead of the controller sending one copy per node. A fetch that offers no port (an agent
  whose peer failed it, or one that cannot listen) is always served.
- A slot, or a direct fetch, that stays silent for ``stall`` seconds is given back: a node
  that died mid-fetch holds nothing up.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

K = TypeVar("K")
V = TypeVar("V")

SLOTS = 4  # peers one holder sends to at once
SEEDS = 4  # nodes the controller sends one bundle to at once, while peers can take over
STALL = 60.0  # seconds of silence after which a slot or a direct fetch is given back
WAIT = 0.25  # seconds a node told to wait lets pass before it asks again, at least
ASKS_PER_SECOND = 1000  # at most, over the nodes waiting for one bundle: 10,000 waiting ask every 10 s
FINISH = 10.0  # seconds a node sent a whole bundle has to say it holds it
LOOK = 64  # holders looked at for a free one, per fetch


@dataclass(frozen=True)
class Route:
    kind: str  # "direct" | "peer" | "wait"
    peer: str = ""
    wait: float = 0.0  # "wait": seconds before asking again


@dataclass
class Swarm:
    slots: int = SLOTS
    seeds: int = SEEDS
    stall: float = STALL
    holders: dict[str, dict[str, None]] = field(default_factory=dict)  # digest -> nodes, oldest first
    sending: dict[str, dict[tuple[str, str], float]] = field(default_factory=dict)  # holder -> (digest, to) -> since
    fed_by: dict[tuple[str, str], str] = field(default_factory=dict)  # (digest, to) -> the holder sending it
    direct: dict[str, dict[str, float]] = field(default_factory=dict)  # digest -> node -> last chunk asked
    waiting: dict[str, dict[str, float]] = field(default_factory=dict)  # digest -> node told to wait -> when
    peer_sends: int = 0  # bundles handed to peers to send, since start

    def route(self, digest: str, node: str, offset: int, can_listen: bool, now: float, alive: Callable[[str], bool]) -> Route:
        """Where ``node``'s fetch of ``digest`` from ``offset`` goes."""
        self._release(digest, node, failed=not can_listen)
        fetching = self.direct.get(digest, {})
        if offset > 0 or not can_listen or node in fetching:
            _discard(self.waiting, digest, node)
            self.direct.setdefault(digest, {})[node] = now  # a fetch under way goes on from the controller
            return Route("direct")
        peer = self._free_holder(digest, node, alive)
        if peer is None and sum(1 for t in fetching.values() if now - t <= self.stall) >= self.seeds:
            waiting = self.waiting.setdefault(digest, {})
            waiting[node] = now
            return Route("wait", wait=max(WAIT, len(waiting) / ASKS_PER_SECOND))
        _discard(self.waiting, digest, node)
        if peer is not None:
            self.sending.setdefault(peer, {})[(digest, node)] = now
            self.fed_by[(digest, node)] = peer
            self.peer_sends += 1
            return Route("peer", peer)
        self.direct.setdefault(digest, {})[node] = now
        return Route("direct")

    def _free_holder(self, digest: str, node: str, alive: Callable[[str], bool]) -> str | None:
        """The least busy of the newest ``LOOK`` holders with a free slot (an idle one at
        once): newest first, as those that just got the bundle are the likeliest idle, and a
        bounded look, as a bundle on 10,000 nodes has 10,000 holders."""
        best, load = None, self.slots
        for looked, holder in enumerate(reversed(self.holders.get(digest, {}))):
            if looked >= LOOK:
                break
            busy = len(self.sending.get(holder, {}))
            if busy < load and holder != node and alive(holder):
                best, load = holder, busy
                if busy == 0:
                    break
        return best

    def finishing(self, digest: str, node: str, now: float) -> None:
        """``node`` was sent the bundle's last bytes: it counts as fetching for ``FINISH``
        seconds more (while it verifies and unpacks, then says it holds it), not ``stall``."""
        fetching = self.direct.get(digest)
        if fetching is not None and node in fetching:
            fetching[node] = now - self.stall + FINISH

    def held(self, digest: str, node: str) -> None:
        """``node`` holds the whole verified bundle: it may send it to others."""
        self._release(digest, node, failed=False)
        _discard(self.direct, digest, node)
        _discard(self.waiting, digest, node)
        self.holders.setdefault(digest, {})[node] = None

    def dropped(self, digest: str, node: str) -> None:
        """``node`` no longer holds the bundle (evicted from its cache)."""
        _discard(self.holders, digest, node)

    def forget(self, node: str) -> None:
        """``node`` is down or gone: it holds, sends and fetches nothing."""
        for digest in [d for d, hs in self.holders.items() if node in hs]:
            self.dropped(digest, node)
        for key in self.sending.pop(node, {}):
            del self.fed_by[key]
        for key in [k for k in self.fed_by if k[1] == node]:
            self._release(*key, failed=False)
        for digest in [d for d, f in self.direct.items() if node in f]:
            _discard(self.direct, digest, node)
        for digest in [d for d, w in self.waiting.items() if node in w]:
            _discard(self.waiting, digest, node)

    def expire(self, now: float) -> None:
        for holder in list(self.sending):
            sends = self.sending[holder]
            for key in [k for k, since in sends.items() if now - since > self.stall]:
                del sends[key]
                del self.fed_by[key]
            if not sends:
                del self.sending[holder]
        for by_node in (self.direct, self.waiting):
            for digest in list(by_node):
                for node in [n for n, t in by_node[digest].items() if now - t > self.stall]:
                    _discard(by_node, digest, node)

    def busy(self) -> int:
        """Sends handed to peers and not finished yet (``ping``)."""
        return sum(len(s) for s in self.sending.values())

    def _release(self, digest: str, to: str, *, failed: bool) -> None:
        """``to``'s send of ``digest`` by a peer is over; if ``failed``, that peer no longer
        counts as a holder (it may have lost the bundle, or be unreachable from ``to``)."""
        holder = self.fed_by.pop((digest, to), None)
        if holder is None:
            return
        _discard(self.sending, holder, (digest, to))
        if failed:
            self.dropped(digest, holder)


def _discard(outer: dict[K, dict[V, Any]], key: K, inner: V) -> None:
    """Remove ``inner`` from ``outer[key]``, and ``key`` once nothing is left under it."""
    under = outer.get(key)
    if under is not None:
        under.pop(inner, None)
        if not under:
            del outer[key]
