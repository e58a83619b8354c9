"""Pushing slices' code to their nodes (``code.delivery: push``, sender-initiated).

When a node's desired set holds a sliver whose code is pushed and the node has not got the
bundle, the controller streams it unasked, ``WINDOW`` chunks ahead of what the node says it
holds (``code_ack``): a hundred nodes cost a hundred windows of memory, not a hundred
bundles. A node that went quiet is sent on from what it acknowledged when it acks again (its
agent acks every few seconds while it waits). Counters say what left the controller.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from controller.contentstore import ContentStore
from slices.codec import encode
from slices.model import SliverSpec
from slices.protocol import PushCode
from slices.protocol.code import CHUNK

WINDOW = 4  # chunks in flight per node and bundle (2 MiB)


@dataclass
class Stream:
    peer: bytes
    size: int
    sent: int = 0  # next byte to send
    acked: int = 0


class CodePusher:
    def __init__(self, content: ContentStore, send: Callable[[bytes, bytes], bool], sender: str) -> None:
        self.content, self.send, self.sender = content, send, sender
        self.streams: dict[tuple[str, str], Stream] = {}
        self.done: set[tuple[str, str]] = set()  # (node, digest) pushed in full
        self.bytes_out = 0

    def want(self, node: str, peer: bytes, slivers: list[SliverSpec]) -> None:
        """Start pushing each pushed bundle ``node``'s slivers need that it has not had."""
        for spec in slivers:
            code = spec.code
            if code is None or code.delivery != "push" or not self.content.has(code.digest):
                continue
            key = (node, code.digest)
            if key in self.done or key in self.streams:
                continue
            self.streams[key] = Stream(peer, code.size)
            self._pump(key)

    def ack(self, node: str, peer: bytes, digest: str, have: int) -> None:
        key = (node, digest)
        stream = self.streams.get(key)
        if stream is None:
            return
        nudge = have <= stream.acked  # no progress since its last ack: what was sent since is lost
        stream.peer, stream.acked = peer, max(stream.acked, min(have, stream.size))
        if nudge and have < stream.sent:
            stream.sent = have
        stream.sent = max(stream.sent, stream.acked)  # it had more already (an agent that restarted mid-way)
        if stream.acked >= stream.size:
            del self.streams[key]
            self.done.add(key)
            return
        self._pump(key)

    def forget(self, node: str) -> None:
        """The node's agent registered anew: it says again what it has."""
        for key in [k for k in self.done if k[0] == node]:
            self.done.discard(key)

    def _pump(self, key: tuple[str, str]) -> None:
        stream = self.streams[key]
        digest = key[1]
        while stream.sent < stream.size and stream.sent - stream.acked < WINDOW * CHUNK:
            data, size = self.content.read(digest, stream.sent, CHUNK)
            if not data:
                break
            msg = PushCode(digest=digest, offset=stream.sent, size=size, data=data)
            self.send(stream.peer, encode(msg, id=f"c{digest[:8]}.{stream.sent}", sender=self.sender))
            stream.sent += len(data)
            self.bytes_out += len(data)
