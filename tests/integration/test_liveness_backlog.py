"""Liveness under a backlog (controller/server.py): a node is judged silent as of the last
time the agents' socket was empty, so a controller seconds behind its queue does not count
as missed the heartbeats still waiting in it (the false downs of bench responsiveness at
10,000 nodes), and a node that really is silent is still found once the queue is read."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest

from controller.server import MAX_BATCH, Server
from slices import identity
from slices.codec import decode, encode
from slices.model import NodeInfo
from slices.protocol import Heartbeat, Ok, Ping, Register, TrustKeys
from slices.transport import ClientKeys, Dealer, Keypair, new_keypair
from tests.clock import Clock
from tests.conftest import answer, hand_run_server, wait_for

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def clock() -> Clock:
    return Clock(1_000.0)


@pytest.fixture
def server(tmp_path: Path, clock: Clock) -> Iterator[Server]:
    """A controller on a hand-moved clock whose turns the test runs itself."""
    with hand_run_server(tmp_path, clock, restart_grace=0.0) as s:
        yield s


def enrol(server: Server, tmp_path: Path, nodes: list[dict[str, Any]]) -> dict[str, Dealer]:
    """Trust a key per node (as the admin) and register each node on its own connection."""
    admin = identity.read(tmp_path / "keys" / "admin.identity.yaml").keys
    pairs: dict[str, Keypair] = {n["name"]: new_keypair() for n in nodes}
    user = Dealer(server.user_url, "admin", admin)
    try:
        user.send(encode(TrustKeys(agents={name: p.public for name, p in pairs.items()}), id="trust", sender="t"))
        assert isinstance(answer(server, user), Ok)
    finally:
        user.close()
    agents = {}
    for n in nodes:
        d = agents[n["name"]] = Dealer(server.url, n["name"], ClientKeys(admin.server, pairs[n["name"]]))
        d.send(encode(Register(node=NodeInfo.from_wire(n)), id="r", sender=n["name"]))
        assert isinstance(answer(server, d), Ok)
    return agents


def states(server: Server) -> dict[str, str]:
    return {name: rec.state for name, rec in server.cluster.registry.nodes.items()}


def test_a_heartbeat_waiting_in_the_queue_is_not_counted_as_missed(server: Server, clock: Clock, tmp_path: Path, nodes24: list[dict[str, Any]], caplog: pytest.LogCaptureFixture) -> None:
    """Node A's heartbeat waits behind more messages than one turn reads, while the clock
    has moved well past A's liveness window (3 periods of 1 s). The turn that stops short of
    the heartbeat must not mark A down; once the queue is read, A is up, and B, which sent
    nothing, is down: silence is still found, only as of the time the queue was empty. The
    controller says in its log that it is behind, and stretches the heartbeat period."""
    a, b = nodes24[0]["name"], nodes24[1]["name"]
    agents = enrol(server, tmp_path, nodes24[:2])
    try:
        flood = MAX_BATCH + 200
        for k in range(flood):
            agents[a].send(encode(Ping(), id=f"p{k}", sender=a))
        agents[a].send(encode(Heartbeat(node=a, generation=0), id="hb", sender=a))
        wait_for(lambda: bool(server.sockets.agents.sock.poll(0)), timeout=10, what="the flood at the controller")
        clock.now += 10.0  # the controller is 10 s behind its queue
        before = server.stats.handled
        server.turn(0.0)
        assert server.stats.handled - before < flood + 1, "the turn read the whole queue: no backlog to test"
        assert states(server) == {a: "up", b: "up"}, "a node was judged on a heartbeat still in the queue"
        assert "behind: the agents' queue has not been empty for 10.0 s" in caplog.text, "the operator is told"
        replies: list[dict[str, Any]] = []
        while not any(r["id"] == "hb" for r in replies):
            server.turn(0.02)
            while agents[a].sock.poll(0):
                replies.append(msgpack.unpackb(agents[a].sock.recv()))
        assert server.cluster.registry.nodes[a].state == "up"
        # Back-pressure: 10 s behind, over two periods: the heartbeat's answer tells A to call
        # half as often, and the log says why.
        beat = decode(msgpack.packb(next(r for r in replies if r["id"] == "hb"))).msg
        assert isinstance(beat, Ok) and beat.result["period"] == 2.0, beat
        assert "heartbeat period now 2.0 s" in caplog.text
        clock.now += 1.0  # the next sweep, with the queue read
        wait_for(lambda: server.turn(0.02) or states(server)[b] == "down", timeout=10, what="the silent node judged down")
        assert states(server) == {a: "up", b: "down"}
    finally:
        for d in agents.values():
            d.close()
