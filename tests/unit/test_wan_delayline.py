"""The delay line: packets classified by subnet, held for their pair's delay, order kept, bounds held."""

from __future__ import annotations

import ipaddress

import pytest

from node_agent.wan.delayline import DelayLine, SubnetIndex
from tests.clock import Clock

pytestmark = pytest.mark.timeout(10)

SUBNETS = ["10.1.0.0/24", "10.2.0.0/24", "10.3.0.0/16"]
DELAYS = {(0, 1): 0.050, (1, 0): 0.050, (0, 2): 0.010, (2, 0): 0.010, (1, 2): 0.020, (2, 1): 0.020}


def packet(src: str, dst: str, size: int = 60, *, offset: int = 0, tag: int = 0) -> bytes:
    header = bytes([0x45, 0]) + size.to_bytes(2, "big") + tag.to_bytes(2, "big") + bytes(6)
    body = header + ipaddress.IPv4Address(src).packed + ipaddress.IPv4Address(dst).packed
    return bytes(offset) + body + bytes(max(0, size - len(body)))


def line(**kw: object) -> DelayLine:
    return DelayLine(SUBNETS, lambda a, b: DELAYS[(a, b)], **kw)  # type: ignore[arg-type]


def drain(dl: DelayLine, at: float) -> list[bytes]:
    out: list[bytes] = []
    clock = Clock()
    clock.now = at
    dl.release_due(clock, out.append)
    return out


def test_subnet_index_longest_prefix() -> None:
    idx = SubnetIndex(["10.0.0.0/8", "10.5.0.0/24", "192.168.1.0/24"])
    assert idx.lookup(int(ipaddress.IPv4Address("10.5.0.9"))) == 1
    assert idx.lookup(int(ipaddress.IPv4Address("10.5.1.9"))) == 0
    assert idx.lookup(int(ipaddress.IPv4Address("192.168.1.255"))) == 2
    assert idx.lookup(int(ipaddress.IPv4Address("172.16.0.1"))) == -1


def test_each_pair_gets_its_own_delay() -> None:
    dl = line()
    a = packet("10.1.0.2", "10.2.0.2", tag=1)
    b = packet("10.1.0.2", "10.3.7.2", tag=2)
    c = packet("10.3.7.2", "10.2.0.9", tag=3)
    for p in (a, b, c):
        assert dl.push(p, 1.0)
    assert dl.next_release() == pytest.approx(1.010)
    assert drain(dl, 1.009) == []
    assert drain(dl, 1.010) == [b]
    assert drain(dl, 1.049) == [c]
    assert drain(dl, 2.0) == [a]
    assert dl.stats.forwarded == 3 and dl.stats.queued == 0 and dl.stats.queued_bytes == 0
    assert dl.stats.bytes_in == dl.stats.bytes_out == 180


def test_lateness_is_measured_against_the_release_time() -> None:
    dl = line()
    dl.push(packet("10.1.0.2", "10.2.0.2"), 0.0)
    drain(dl, 0.0503)
    assert dl.stats.lateness_ms_max == pytest.approx(0.3)
    assert dl.stats.to_map()["lateness_ms_p50"] == 0.5


def test_jitter_keeps_the_order_of_a_pair_and_is_reproducible() -> None:
    def run(seed: int) -> list[tuple[float, int]]:
        dl = line(jitter_s=0.020, seed=seed)
        for i in range(500):
            dl.push(packet("10.1.0.2", "10.2.0.2", tag=i), i * 0.001)
        order, clock = [], Clock()
        while dl.heap:
            clock.now = dl.heap[0][0]
            dl.release_due(clock, lambda p: order.append((clock.now, int.from_bytes(p[4:6], "big"))))
        return order

    first = run(7)
    assert [tag for _, tag in first] == list(range(500))  # never reordered
    releases = [t - tag * 0.001 for t, tag in first]
    assert min(releases) < 0.045 and max(releases) > 0.055  # jitter did spread the delays
    assert run(7) == first
    assert run(8) != first


def test_loss_is_seeded_and_near_its_rate() -> None:
    dl = line(loss=0.1, seed=3)
    for i in range(10_000):
        dl.push(packet("10.1.0.2", "10.2.0.2", tag=i % 60000), 0.0)
    assert 900 < dl.stats.dropped_loss < 1100
    assert dl.stats.queued == 10_000 - dl.stats.dropped_loss


def test_unknown_and_non_ipv4_packets_are_counted_not_queued() -> None:
    dl = line()
    assert not dl.push(packet("10.9.0.2", "10.2.0.2"), 0.0)  # source of no node
    assert not dl.push(packet("10.1.0.2", "8.8.8.8"), 0.0)  # destination of no node
    assert not dl.push(b"\x60" + bytes(59), 0.0)  # IPv6
    assert not dl.push(b"\x45\x00", 0.0)  # truncated
    assert dl.stats.dropped_unknown == 4 and dl.stats.queued == 0 and dl.stats.received == 4


def test_queue_bounds_drop_and_count() -> None:
    dl = line(max_packets=3, max_bytes=10_000)
    for _ in range(5):
        dl.push(packet("10.1.0.2", "10.2.0.2", 100), 0.0)
    assert dl.stats.queued == 3 and dl.stats.dropped_queue == 2
    dl2 = line(max_bytes=65_536)
    for _ in range(5):
        dl2.push(packet("10.1.0.2", "10.2.0.2", 20_000), 0.0)
    assert dl2.stats.queued == 3 and dl2.stats.dropped_queue == 2 and dl2.stats.peak_queued_bytes == 60_000
    assert len(drain(dl2, 1.0)) == 3 and dl2.stats.queued_bytes == 0


def test_virtio_header_offset_and_write_errors() -> None:
    dl = line(offset=10)
    p = packet("10.1.0.2", "10.3.0.2", offset=10)
    assert dl.push(p, 0.0)

    def broken(pkt: bytes) -> None:
        raise OSError(22, "Invalid argument")

    clock = Clock()
    clock.now = 1.0
    assert dl.release_due(clock, broken) == 0
    assert dl.stats.write_errors == 1 and dl.stats.forwarded == 0 and dl.stats.queued == 0
