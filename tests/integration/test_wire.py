"""Garbage on the wire: logged with the peer, dropped, and the controller keeps serving."""

from __future__ import annotations

import os
import random
import socket
from pathlib import Path

import msgpack
import pytest

from slices.codec import Envelope, decode, encode
from slices.protocol import PROTOCOL_VERSION, ListSlices, Ping, Pong
from slices.ratelimit import BURST
from slices.transport import Dealer
from tests.conftest import ControllerThread, wait_for

pytestmark = pytest.mark.timeout(60)


def send_and_collect(d: Dealer, payload: bytes, times: int) -> list[Envelope]:
    """Send the same payload ``times`` times (a client retrying) and read as many replies."""
    for _ in range(times):
        d.send(payload)
    replies = []
    while len(replies) < times:
        assert d.wait(5), f"only {len(replies)} of {times} replies"
        replies.append(decode(d.recv() or b""))
    return replies


def raw(type_name: str, body: object, *, id: str, version: object = PROTOCOL_VERSION) -> bytes:
    """An envelope packed by hand: what a broken or hostile peer can send."""
    packed: bytes = msgpack.packb({"v": version, "type": type_name, "id": id, "from": "peer", "ts": 1.0, "body": body}, use_bin_type=True)
    return packed


def ping(c: ControllerThread) -> Pong:
    with c.client(timeout=5) as client:
        return client.call(Ping())


def test_random_bytes_on_the_raw_tcp_port(controller: ControllerThread) -> None:
    host, port = controller.url.removeprefix("tcp://").rsplit(":", 1)
    rng = random.Random(7)
    for _ in range(50):
        with socket.create_connection((host, int(port)), timeout=2) as s:
            s.sendall(bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 4096))))
    assert ping(controller).protocol == PROTOCOL_VERSION


def test_garbage_frames_are_dropped_and_logged(controller: ControllerThread, caplog: pytest.LogCaptureFixture) -> None:
    d = controller.dealer("garbage-peer")
    try:
        rng = random.Random(11)
        frames = [os.urandom(controller.settings.max_frame_bytes + 1)]  # oversized
        frames += [bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 300))) for _ in range(200)]
        valid = encode(ListSlices(), id="abc", sender="x")
        frames += [valid[: len(valid) // 2], msgpack.packb([1, 2, 3]), msgpack.packb({"v": 1, "type": "no_such_type", "id": "1", "from": "x", "ts": 1.0, "body": {}})]
        for f in frames:
            d.send(f)
        d.sock.send_multipart([b"two", b"frames"])
        wait_for(lambda: controller.server.stats.dropped >= len(frames) + 1, what="every bad frame dropped")
        assert ping(controller).nodes == 0
        assert "over the" in caplog.text and "127.0.0.1" in caplog.text
        # Logged, but at a bounded rate: 204 bad frames are not 204 lines (slices/ratelimit.py).
        dropped = [r for r in caplog.records if r.name == "controller.server" and "dropping" in r.getMessage()]
        assert 1 <= len(dropped) <= BURST + 1 and dropped[0].filename == "server.py"
        assert controller.server.stats.errors == 0
    finally:
        d.close()


def test_wrong_protocol_version_is_refused_with_both_versions(controller: ControllerThread) -> None:
    d = controller.dealer("old-agent")
    try:
        d.send(raw("register", {"node": {"name": "x"}}, id="req-1", version=1))
        assert d.wait(5)
        frame = d.recv()
        assert frame is not None
        env = decode(frame)
        assert env.id == "req-1" and env.type == "error"
        reason = env.msg.reason  # type: ignore[attr-defined]
        assert "protocol 1," in reason and f"speaks {PROTOCOL_VERSION}" in reason
    finally:
        d.close()


def test_malformed_registration_gets_one_error_reply(controller: ControllerThread) -> None:
    d = controller.dealer("bad-agent")
    try:
        d.send(raw("register", {"node": {"name": "x", "site": "y"}}, id="r1"))
        assert d.wait(5)
        env = decode(d.recv() or b"")
        assert env.id == "r1" and env.type == "error" and "register.node.location: required" in env.msg.reason  # type: ignore[attr-defined]
        assert not d.wait(0.3), "exactly one reply"
    finally:
        d.close()


def test_retried_request_is_not_applied_twice(controller: ControllerThread) -> None:
    """The same request id sent twice (a client retry) gets the same reply, applied once."""
    from slices.protocol import CreateSlice, DeleteSlice

    d = controller.dealer("retrying-client")
    try:
        doc = {"name": "x", "description": "y", "placement": {"count": 1}}
        replies = send_and_collect(d, encode(CreateSlice(spec=doc), id="same-id", sender="retrying-client"), 2)
        assert replies[0].msg == replies[1].msg
        assert replies[0].type == "error"  # no nodes: infeasible, and reported the same way twice
        # delete is also deduplicated: a retried delete must not fail with not-found
        with controller.client() as c:
            assert c.call(ListSlices()).slices == []
        got = send_and_collect(d, encode(DeleteSlice(name="x"), id="del-1", sender="retrying-client"), 2)
        assert got[0].msg == got[1].msg
    finally:
        d.close()


def test_a_reply_over_max_reply_bytes_is_refused_with_a_reason(tmp_path: Path) -> None:
    """A reply is bounded like a request: over ``max_reply_bytes`` it becomes ``too-large``
    (before, nothing bounded it but the client's 64 MiB frame cap, which drops it unseen)."""
    from slices.client import RemoteError
    from slices.protocol import ListKeys, TrustKeys
    from slices.transport import new_keypair

    controller = ControllerThread(tmp_path / "c.db", max_reply_bytes=4096)
    try:
        with controller.client() as c:
            c.call(TrustKeys(agents={f"node-{i:03d}": new_keypair().public for i in range(100)}))
            with pytest.raises(RemoteError) as err:
                c.call(ListKeys())
            assert err.value.code == "too-large" and "over the controller's max_reply_bytes (4,096)" in err.value.reason
            assert c.call(Ping()).principal == "user admin"
    finally:
        controller.stop()
