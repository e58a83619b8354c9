"""The controller's users' socket (controller/sockets.py): served before the agents' backlog,
for user keys only, and replies always leave by the socket their request came in by."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq

from controller.server import Server
from controller.sockets import USER_TAG, user_endpoint
from slices import identity
from slices.codec import decode, encode
from slices.model import NodeInfo
from slices.protocol import Error, Heartbeat, Ok, Ping, Register
from slices.transport import ClientKeys, Dealer, TransportError, new_keypair
from tests.conftest import ControllerThread, hand_run_server, wait_for

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """A controller whose turns the test runs by hand: what is queued when a turn starts is
    known, so the order it is served in is too."""
    with hand_run_server(tmp_path, batch_budget=30.0) as s:
        yield s


def admin_keys(tmp_path: Path) -> ClientKeys:
    return identity.read(tmp_path / "keys" / "admin.identity.yaml").keys


def replies(d: Dealer, n: int) -> list[dict[str, object]]:
    """``n`` raw reply envelopes (with the controller's send time, ``ts``)."""
    out = []
    while len(out) < n:
        assert d.sock.poll(10_000), f"{len(out)} of {n} replies"
        out.append(msgpack.unpackb(d.sock.recv()))
    return out


def test_a_users_request_is_served_before_the_agents_backlog(server: Server, tmp_path: Path) -> None:
    """100 connections each queue 20 pings on the agents' socket, then one user pings on the
    users' socket; one turn serves all. The user's reply is sent before every one of the
    2,000. On a single socket, fair queuing would serve the last-active peer after about one
    round of the 100 others (the seconds-long waits of bench responsiveness at 10,000 nodes)."""
    keys = admin_keys(tmp_path)
    crowd = [Dealer(server.url, f"crowd-{i}", keys) for i in range(100)]
    user = Dealer(server.user_url, "user", keys)
    try:
        for d in crowd:  # connections first (handshakes are served by turns too)
            d.send(encode(Ping(), id="hello", sender="t"))
        wait_for(lambda: server.turn(0.05) or server.stats.handled >= 100, timeout=30, what="the crowd's handshakes")
        for d in crowd:
            replies(d, 1)
        for d in crowd:
            for k in range(20):
                d.send(encode(Ping(), id=f"p{k}", sender="t"))
        user.send(encode(Ping(), id="me", sender="t"))
        users_socket = server.sockets.users
        assert users_socket is not None
        wait_for(lambda: bool(users_socket.sock.poll(0)), timeout=10, what="the user's ping at the controller")
        before = server.stats.handled
        while server.stats.handled < before + 2001:
            server.turn(0.1)
        mine = replies(user, 1)[0]
        theirs = [r for d in crowd for r in replies(d, 20)]
        assert mine["id"] == "me" and isinstance(decode(msgpack.packb(mine)).msg, Ok)
        assert all(r["ts"] > mine["ts"] for r in theirs), f"{sum(r['ts'] <= mine['ts'] for r in theirs)} agent-socket replies went first"
    finally:
        for d in [*crowd, user]:
            d.close()


def test_the_users_socket_speaks_to_users_only(tmp_path: Path, nodes24: list[dict[str, Any]]) -> None:
    """An agent's messages on the users' socket are dropped (it has its own socket), and an
    unknown key cannot enrol there; the same agent registers on the agents' socket."""
    ctl = ControllerThread(tmp_path / "c.db")
    try:
        pair = new_keypair()
        raw = nodes24[0]
        ctl.trust({raw["name"]: pair})
        agent_keys = ClientKeys(ctl.server_key, pair)
        reg = encode(Register(node=NodeInfo.from_wire(raw)), id="r1", sender="agent")
        wrong = Dealer(ctl.user_url, "agent-on-users", agent_keys)
        stranger = Dealer(ctl.user_url, "stranger", ClientKeys(ctl.server_key, new_keypair()))
        right = Dealer(ctl.url, "agent", agent_keys)
        try:
            wrong.send(reg)
            wrong.send(encode(Heartbeat(node=raw["name"], generation=0), id="h1", sender="agent"))
            stranger.send(reg)
            refusal = decode(msgpack.packb(replies(stranger, 1)[0])).msg
            assert isinstance(refusal, Error) and refusal.code == "unknown-key", "no enrolment on the users' socket"
            right.send(reg)
            answer = decode(msgpack.packb(replies(right, 1)[0]))
            assert isinstance(answer.msg, Ok), answer.msg
            assert not wrong.sock.poll(500), "an agent gets nothing on the users' socket"
        finally:
            for d in (wrong, right, stranger):
                d.close()
    finally:
        ctl.stop()


def test_a_peer_cannot_borrow_the_users_tag(server: Server, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A routing identity that starts with the users' tag is dropped on the agents' socket:
    its replies would otherwise leave by the users' socket, to someone else."""
    keys = admin_keys(tmp_path)
    sneaky = zmq.Context.instance().socket(zmq.DEALER)
    sneaky.setsockopt(zmq.LINGER, 0)
    sneaky.setsockopt(zmq.IDENTITY, USER_TAG + b"victim")
    sneaky.setsockopt(zmq.CURVE_SERVERKEY, keys.server.encode())
    sneaky.setsockopt(zmq.CURVE_PUBLICKEY, keys.own.public.encode())
    sneaky.setsockopt(zmq.CURVE_SECRETKEY, keys.own.secret.encode())
    sneaky.connect(server.url)
    honest = Dealer(server.url, "honest", keys)
    try:
        sneaky.send(encode(Ping(), id="s", sender="t"))
        honest.send(encode(Ping(), id="h", sender="t"))
        wait_for(lambda: server.turn(0.05) or bool(honest.sock.poll(0)), timeout=20, what="the honest ping's answer")
        for _ in range(5):
            server.turn(0.05)
        assert not sneaky.poll(200), "no answer for a reserved identity"
        assert "routing identity starts with a reserved byte" in caplog.text
    finally:
        sneaky.close()
        honest.close()


def test_where_the_users_socket_binds() -> None:
    assert user_endpoint("tcp://*:7700", "") == "tcp://*:7701"
    assert user_endpoint("tcp://127.0.0.1:*", "") == "tcp://127.0.0.1:*"
    assert user_endpoint("tcp://*:7700", "tcp://*:9000") == "tcp://*:9000"
    assert user_endpoint("tcp://*:7700", "off") is None
    with pytest.raises(TransportError, match="set user_listen"):
        user_endpoint("ipc:///run/slicemesh", "")
