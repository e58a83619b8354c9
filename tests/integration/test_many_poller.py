"""``ManyPoller`` over real CURVE sockets: it reports every socket that holds a message, after
partial reads, after sends (each Dealer tells it of its own use), and across many rounds (no
lost wake-up), watching only what fired."""

from __future__ import annotations

import os
import time

import pytest

from slices.transport import ClientKeys, Dealer, ManyPoller, Router, new_keypair

pytestmark = pytest.mark.timeout(60)


def drain(router: Router, want: int, timeout: float = 10.0) -> list[tuple[bytes, list[bytes]]]:
    got: list[tuple[bytes, list[bytes]]] = []
    deadline = time.monotonic() + timeout
    while len(got) < want:
        assert time.monotonic() < deadline, f"the router got {len(got)} of {want} messages"
        m = router.recv()
        if m is None:
            router.sock.poll(100)
            continue
        got.append((m[0], m[1]))
    return got


def ready_within(poller: ManyPoller, want: Dealer | int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if want in poller.poll(0.1):
            return True
    return False


def test_every_reply_is_seen_over_many_rounds_and_partial_reads() -> None:
    server = new_keypair()
    router = Router("tcp://127.0.0.1:0", server, lambda _key: True)
    dealers = [Dealer(router.url, f"d{i}", ClientKeys(server.public, new_keypair())) for i in range(20)]
    poller = ManyPoller()
    try:
        for d in dealers:
            poller.add(d)
        for d in dealers:
            d.send(b"hello")
        assert len({peer for peer, _ in drain(router, len(dealers))}) == len(dealers)
        # Rounds of request and reply, as an agent's heartbeats: each reply is reported.
        for rnd in range(50):
            d = dealers[rnd % len(dealers)]
            d.send(f"beat {rnd}".encode())
            (peer_id, payload), = drain(router, 1)
            router.send(peer_id, b"ack " + payload[0])
            assert ready_within(poller, d), f"round {rnd}: the reply was never reported"
            assert d.recv() == b"ack " + payload[0]
        # Three queued, one read: the socket is reported again until it is empty.
        d = dealers[0]
        d.send(b"three")
        (peer_id, _), = drain(router, 1)
        for k in range(3):
            router.send(peer_id, f"m{k}".encode())
        got: list[bytes] = []
        while len(got) < 3:
            assert ready_within(poller, d), f"read {got}, then nothing reported"
            frame = d.recv()
            if frame is not None:
                got.append(bytes(frame))
        assert got == [b"m0", b"m1", b"m2"]
        assert d not in poller.poll(0.2), "an empty socket is not reported"
    finally:
        poller.close()
        for d in dealers:
            d.close()
        router.close()


def test_plain_descriptors_and_removal() -> None:
    r, w = os.pipe()
    poller = ManyPoller()
    try:
        poller.add(r)
        assert poller.poll(0.05) == []
        os.write(w, b"x")
        assert poller.poll(1.0) == [r]
        poller.remove(r)
        assert poller.poll(0.05) == []
    finally:
        poller.close()
        os.close(r)
        os.close(w)
