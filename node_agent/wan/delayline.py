"""Packets held until their release time: the pure core of the user-space delay path.

A packet comes in as bytes (an optional virtio-net header, then IPv4); its source and
destination addresses name the two simulated machines by subnet; the pair's delay (plus
jitter) gives its release time. Within one (source, destination) pair packets leave in the
order they came (a later packet never overtakes an earlier one even with jitter), as on a
real path without load balancing. The queue is bounded in packets and bytes; what does not
fit, what the loss model drops and what belongs to no known subnet are counted, not queued.

Each pair has a FIFO (its release times never decrease) and a heap orders the pairs by the
release time of their first packet, so a packet costs O(log active pairs), not O(log queued).
No I/O and no clock of its own: the daemon passes ``now`` in, so tests drive it directly.
"""

from __future__ import annotations

import bisect
import heapq
import ipaddress
import random
import struct
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

_ADDRS = struct.Struct("!II")  # source and destination address, at byte 12 of the IPv4 header
#: Upper edges (ms) of the release-lateness histogram; the last bucket is "more".
LATENESS_EDGES_MS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0)


class SubnetIndex:
    """IPv4 address -> node number, by longest matching prefix, in one dict lookup per length."""

    def __init__(self, subnets: Sequence[str]) -> None:
        by_len: dict[int, dict[int, int]] = {}
        for i, s in enumerate(subnets):
            net = ipaddress.IPv4Network(s)
            shift = 32 - net.prefixlen
            by_len.setdefault(shift, {})[int(net.network_address) >> shift] = i
        self.tables = sorted(by_len.items())  # smallest shift = longest prefix first

    def lookup(self, addr: int) -> int:
        for shift, table in self.tables:
            i = table.get(addr >> shift)
            if i is not None:
                return i
        return -1


@dataclass
class Counters:
    received: int = 0
    forwarded: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    dropped_loss: int = 0
    dropped_queue: int = 0
    dropped_unknown: int = 0
    write_errors: int = 0
    queued: int = 0
    queued_bytes: int = 0
    peak_queued: int = 0
    peak_queued_bytes: int = 0
    lateness_ms_max: float = 0.0
    lateness_ms_sum: float = 0.0
    lateness_hist: list[int] = field(default_factory=lambda: [0] * (len(LATENESS_EDGES_MS) + 1))

    def lateness_percentile_ms(self, q: float) -> float:
        """Upper edge of the bucket holding the q-quantile (inf if beyond the last edge)."""
        total = sum(self.lateness_hist)
        if not total:
            return 0.0
        want, seen = q * total, 0
        for i, n in enumerate(self.lateness_hist):
            seen += n
            if seen >= want:
                return LATENESS_EDGES_MS[i] if i < len(LATENESS_EDGES_MS) else float("inf")
        return float("inf")

    def to_map(self) -> dict[str, object]:
        out = asdict(self)
        out["lateness_ms_mean"] = self.lateness_ms_sum / self.forwarded if self.forwarded else 0.0
        out["lateness_ms_p50"] = self.lateness_percentile_ms(0.5)
        out["lateness_ms_p99"] = self.lateness_percentile_ms(0.99)
        out["lateness_edges_ms"] = list(LATENESS_EDGES_MS)
        return out


class DelayLine:
    """The timer heap: ``push`` packets as they arrive, ``pop_due`` those whose time has come.

    ``delay_s(src, dst)`` is the mean one-way delay of a node pair in seconds (node numbers
    index the subnets given to ``SubnetIndex``); it is called once per pair and cached.
    ``offset`` is the length of the header in front of the IPv4 packet (10 with IFF_VNET_HDR).
    """

    def __init__(
        self,
        subnets: Sequence[str],
        delay_s: Callable[[int, int], float],
        *,
        jitter_s: float = 0.0,
        loss: float = 0.0,
        seed: int = 1,
        max_packets: int = 100_000,
        max_bytes: int = 256 * 2**20,
        offset: int = 0,
    ) -> None:
        self.index = SubnetIndex(subnets)
        self._one = self.index.tables[0] if len(self.index.tables) == 1 else None
        self.n = len(subnets)
        self._delay_fn = delay_s
        self._delay: dict[int, float] = {}
        self._queues: dict[int, deque[tuple[float, bytes]]] = {}
        self.jitter_s, self.loss = jitter_s, loss
        self.rng = random.Random(seed)
        self.max_packets, self.max_bytes = max_packets, max_bytes
        self.offset = offset
        #: (release time of the head packet, pair) for every pair with packets queued
        self.heap: list[tuple[float, int]] = []
        self.stats = Counters()

    def classify(self, pkt: bytes) -> int:
        """The pair key ``src * n + dst``, or -1 for a packet that is not IPv4 between known nodes."""
        o = self.offset
        if len(pkt) < o + 20 or pkt[o] >> 4 != 4:
            return -1
        src, dst = _ADDRS.unpack_from(pkt, o + 12)
        if self._one is not None:  # every subnet has the same length: the usual case, kept fast
            shift, table = self._one
            a, b = table.get(src >> shift, -1), table.get(dst >> shift, -1)
        else:
            a, b = self.index.lookup(src), self.index.lookup(dst)
        if a < 0 or b < 0:
            return -1
        return a * self.n + b

    def push(self, pkt: bytes, now: float) -> bool:
        """Queue one packet that arrived at ``now``; False if it was dropped (and counted)."""
        st = self.stats
        size = len(pkt)
        st.received += 1
        st.bytes_in += size
        pair = self.classify(pkt)
        if pair < 0:
            st.dropped_unknown += 1
            return False
        if self.loss and self.rng.random() < self.loss:
            st.dropped_loss += 1
            return False
        if st.queued >= self.max_packets or st.queued_bytes + size > self.max_bytes:
            st.dropped_queue += 1
            return False
        d = self._delay.get(pair)
        if d is None:
            d = self._delay[pair] = self._delay_fn(pair // self.n, pair % self.n)
        if self.jitter_s:
            d = max(0.0, d + self.rng.gauss(0.0, self.jitter_s))
        release = now + d
        q = self._queues.get(pair)
        if q:  # the pair's queue is in release order: a later packet never overtakes
            if release < q[-1][0]:
                release = q[-1][0]
            q.append((release, pkt))
        else:
            if q is None:
                q = self._queues[pair] = deque()
            q.append((release, pkt))
            heapq.heappush(self.heap, (release, pair))
        st.queued += 1
        st.queued_bytes += size
        if st.queued > st.peak_queued:
            st.peak_queued = st.queued
        if st.queued_bytes > st.peak_queued_bytes:
            st.peak_queued_bytes = st.queued_bytes
        return True

    def next_release(self) -> float | None:
        return self.heap[0][0] if self.heap else None

    def release_due(self, clock: Callable[[], float], write: Callable[[bytes], object]) -> int:
        """Hand every packet that is due to ``write``, earliest first; returns how many went.

        Lateness (clock minus release time) is taken just before each write, because a TUN
        write runs the kernel's forwarding of the packet before it returns."""
        heap, queues, st = self.heap, self._queues, self.stats
        hist, edges = st.lateness_hist, LATENESS_EDGES_MS
        n = 0
        now = clock()
        while heap and heap[0][0] <= now:
            pair = heap[0][1]
            q = queues[pair]
            release, pkt = q.popleft()
            if q:
                heapq.heapreplace(heap, (q[0][0], pair))
            else:
                heapq.heappop(heap)
            size = len(pkt)
            st.queued -= 1
            st.queued_bytes -= size
            late_ms = (now - release) * 1000.0
            try:
                write(pkt)
            except OSError:
                st.write_errors += 1
                continue
            st.forwarded += 1
            st.bytes_out += size
            st.lateness_ms_sum += late_ms
            if late_ms > st.lateness_ms_max:
                st.lateness_ms_max = late_ms
            hist[bisect.bisect_left(edges, late_ms)] += 1
            n += 1
            now = clock()
        return n
