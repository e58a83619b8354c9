"""controller/codepush.py: what is in flight is bounded per stream and over all streams,
waiting streams go on as acks free room, and a node that stops acking gives its room back."""

from __future__ import annotations

from controller.codepush import STALL, WINDOW, CodePusher
from slices.codec import decode
from slices.model import CodeRef, Resources, SliverSpec
from slices.protocol import PushCode
from slices.protocol.code import CHUNK
from tests.clock import Clock

SIZE = 10 * CHUNK
DIGEST = "a" * 64


class Bundle:
    """One bundle of ``SIZE`` bytes, held whole (the content store's two calls)."""

    def has(self, digest: str) -> bool:
        return digest == DIGEST

    def read(self, digest: str, offset: int, size: int) -> tuple[bytes, int]:
        return bytes(min(size, SIZE - offset)), SIZE


class Wire:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, PushCode]] = []

    def __call__(self, peer: bytes, payload: bytes) -> bool:
        msg = decode(payload).msg
        assert isinstance(msg, PushCode)
        self.sent.append((peer, msg))
        return True

    def to(self, peer: bytes) -> list[int]:
        return [m.offset for p, m in self.sent if p == peer]


def pushed() -> list[SliverSpec]:
    code = CodeRef(digest=DIGEST, size=SIZE, delivery="push")
    return [SliverSpec(id="x-0123abcd", slice="x", isolation="container", image="busybox", resources=Resources(0.1, 64 << 20), code=code)]


def test_a_window_per_stream_and_a_bound_over_all() -> None:
    wire, clock = Wire(), Clock(1000.0)
    p = CodePusher(Bundle(), wire, "c", clock=clock, max_in_flight=6 * CHUNK)
    for n in ("n1", "n2", "n3"):
        p.want(n, n.encode(), pushed())
    assert wire.to(b"n1") == [k * CHUNK for k in range(WINDOW)], "a window ahead"
    assert len(wire.to(b"n2")) == 2 and wire.to(b"n3") == [], "then only as much as the bound leaves"
    assert p.in_flight == 6 * CHUNK and list(p.waiting) == [("n2", DIGEST), ("n3", DIGEST)]
    p.ack("n1", b"n1", DIGEST, 2 * CHUNK)  # frees two chunks: the oldest waiting stream gets them first
    assert len(wire.to(b"n1")) == WINDOW and len(wire.to(b"n2")) == WINDOW and wire.to(b"n3") == []
    assert p.in_flight == 6 * CHUNK


def test_every_stream_finishes_under_the_bound() -> None:
    wire, clock = Wire(), Clock(1000.0)
    p = CodePusher(Bundle(), wire, "c", clock=clock, max_in_flight=3 * CHUNK)
    nodes = [f"n{i}" for i in range(5)]
    for n in nodes:
        p.want(n, n.encode(), pushed())
    for _ in range(200):
        if not p.streams:
            break
        for n in nodes:
            got = wire.to(n.encode())
            p.ack(n, n.encode(), DIGEST, (max(got) + CHUNK) if got else 0)
            assert p.in_flight <= 3 * CHUNK
    assert not p.streams and len(p.done) == 5
    for n in nodes:
        assert sorted(set(wire.to(n.encode()))) == [k * CHUNK for k in range(10)], n


def test_a_silent_node_gives_its_room_back() -> None:
    wire, clock = Wire(), Clock(1000.0)
    p = CodePusher(Bundle(), wire, "c", clock=clock, max_in_flight=WINDOW * CHUNK)
    p.want("quiet", b"quiet", pushed())
    p.want("busy", b"busy", pushed())
    assert wire.to(b"busy") == [] and p.in_flight == WINDOW * CHUNK
    clock.now += STALL / 2
    p.expire(clock.now)
    assert wire.to(b"busy") == [], "not yet stalled"
    clock.now += STALL
    p.expire(clock.now)
    assert len(wire.to(b"busy")) == WINDOW and p.in_flight == WINDOW * CHUNK, "the room went to the waiting stream"
    p.ack("busy", b"busy", DIGEST, WINDOW * CHUNK)
    p.ack("quiet", b"quiet", DIGEST, CHUNK)  # it speaks again: sent on from what it holds
    assert wire.to(b"quiet")[WINDOW:] == [CHUNK * k for k in range(1, 1 + len(wire.to(b"quiet")) - WINDOW)]
