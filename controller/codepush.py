"""Pushing slices' code to their nodes (``code.delivery: push``, sender-initiated).

When a node's desired set holds a sliver whose code is pushed and the node has not got the
bundle, the controller streams it unasked, ``WINDOW`` chunks ahead of what the node says it
holds (``code_ack``). What is in flight is bounded twice: per stream (``WINDOW``) and over
all streams (``MAX_IN_FLIGHT``): a push slice on 10,000 nodes would otherwise queue 4 chunks
for each, 20 GB in libzmq's send queues. Streams past the bound wait their turn, oldest
first, and go on as acks free room. A stream whose node stops acking for ``STALL`` seconds
gives its room back (what it had in flight is counted lost); its agent acks every few
seconds while it waits, and is sent on from what it holds. Counters say what left the
controller.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from slices.codec import encode, new_id
from slices.model import SliverSpec
from slices.protocol import Message, PushCode
from slices.protocol.code import CHUNK

WINDOW = 4  # chunks in flight per node and bundle (2 MiB)
MAX_IN_FLIGHT = 64 * CHUNK  # bytes in flight over all streams (32 MiB): 16 nodes at full window
STALL = 30.0  # seconds without an ack before a stream's room is given back


class Bundles(Protocol):
    def has(self, digest: str) -> bool: ...

    def read(self, digest: str, offset: int, size: int) -> tuple[bytes, int]: ...


@dataclass
class Stream:
    peer: bytes
    size: int
    heard: float  # when the node last acked (or the stream began)
    sent: int = 0  # next byte to send
    acked: int = 0

    @property
    def flight(self) -> int:
        return self.sent - self.acked


class CodePusher:
    def __init__(self, content: Bundles, send: Callable[[bytes, bytes], bool], sender: str, *, clock: Callable[[], float], max_in_flight: int = MAX_IN_FLIGHT) -> None:
        self.content, self.send, self.sender, self.clock = content, send, sender, clock
        self.max_in_flight = max_in_flight
        self.streams: dict[tuple[str, str], Stream] = {}
        self.waiting: dict[tuple[str, str], None] = {}  # held back by the bound over all: oldest first
        self.done: set[tuple[str, str]] = set()  # (node, digest) pushed in full
        self.in_flight = 0  # sum of the streams' flight
        self.bytes_out = 0

    def tell(self, peer: bytes, msg: Message) -> None:
        """A notice to an agent about code (``send_code``: send a bundle to a peer)."""
        self.send(peer, encode(msg, id=new_id(), sender=self.sender))

    def want(self, node: str, peer: bytes, slivers: list[SliverSpec]) -> None:
        """Start pushing each pushed bundle ``node``'s slivers need that it has not had."""
        for spec in slivers:
            code = spec.code
            if code is None or code.delivery != "push" or not self.content.has(code.digest):
                continue
            key = (node, code.digest)
            if key in self.done or key in self.streams:
                continue
            self.streams[key] = Stream(peer, code.size, self.clock())
            self._pump(key)

    def ack(self, node: str, peer: bytes, digest: str, have: int) -> None:
        key = (node, digest)
        stream = self.streams.get(key)
        if stream is None:
            return
        self.in_flight -= stream.flight
        nudge = have <= stream.acked  # no progress since its last ack: what was sent since is lost
        stream.peer, stream.acked, stream.heard = peer, max(stream.acked, min(have, stream.size)), self.clock()
        if nudge and have < stream.sent:
            stream.sent = have
        stream.sent = max(stream.sent, stream.acked)  # it had more already (an agent that restarted mid-way)
        self.in_flight += stream.flight
        if stream.acked >= stream.size:
            del self.streams[key]
            self.waiting.pop(key, None)
            self.done.add(key)
        self._pump_waiting()  # those that waited for room go first
        if key in self.streams:
            self._pump(key)

    def expire(self, now: float) -> None:
        """Streams whose node has not acked for ``STALL`` seconds give their room back."""
        for stream in self.streams.values():
            if stream.flight and now - stream.heard > STALL:
                self.in_flight -= stream.flight
                stream.sent = stream.acked  # sent on from what it acks next
        self._pump_waiting()

    def forget(self, node: str) -> None:
        """The node's agent registered anew: it says again what it has."""
        for key in [k for k in self.done if k[0] == node]:
            self.done.discard(key)

    def _pump_waiting(self) -> None:
        """Streams held back by the bound over all go on, oldest first, while there is room
        (one that fills its window or the room again goes to the back of the line)."""
        while self.waiting and self.in_flight + CHUNK <= self.max_in_flight:
            key = next(iter(self.waiting))
            del self.waiting[key]
            if key in self.streams:
                self._pump(key)

    def _pump(self, key: tuple[str, str]) -> None:
        stream = self.streams[key]
        digest = key[1]
        while stream.sent < stream.size and stream.flight < WINDOW * CHUNK:
            if self.in_flight + CHUNK > self.max_in_flight:
                self.waiting[key] = None  # room over all ran out before its window filled
                return
            data, size = self.content.read(digest, stream.sent, CHUNK)
            if not data:
                break
            msg = PushCode(digest=digest, offset=stream.sent, size=size, data=data)
            self.send(stream.peer, encode(msg, id=f"c{digest[:8]}.{stream.sent}", sender=self.sender))
            stream.sent += len(data)
            self.in_flight += len(data)
            self.bytes_out += len(data)
