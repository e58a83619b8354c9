"""Liveness under a backlog (controller/server.py): a node is judged silent as of the last
time the agents' socket was empty, so a controller seconds behind its queue does not count
as missed the heartbeats still waiting in it (the false downs of bench responsiveness at
10,000 nodes), and a node that really is silent is still found once the queue is read.
A pulse (protocol 2.8, a heartbeat that wants no answer) keeps a node alive as a heartbeat
does, but only an answer tells the node a new period, so its silence is still judged by the
period it keeps."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest

from controller.server import MAX_BATCH, Server
from slices import identity
from slices.codec import decode, encode
from slices.model import NodeInfo, Usage
from slices.protocol import Desired, Error, Heartbeat, Ok, Ping, Pulse, Register, Report
from slices.transport import ClientKeys, Dealer, new_keypair
from tests.clock import Clock
from tests.conftest import enrol, hand_run_server, wait_for

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def clock() -> Clock:
    return Clock(1_000.0)


@pytest.fixture
def server(tmp_path: Path, clock: Clock) -> Iterator[Server]:
    """A controller on a hand-moved clock whose turns the test runs itself."""
    with hand_run_server(tmp_path, clock, restart_grace=0.0) as s:
        yield s


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


def replies(server: Server, d: Any, last: str) -> list[Any]:
    """Turn the controller until ``d`` has the reply ``last``; every reply until then (desired
    sets pushed meanwhile left out), decoded, in the order they came."""
    got: list[Any] = []
    while not got or got[-1].id != last:
        wait_for(lambda: server.turn(0.02) or bool(d.sock.poll(0)), timeout=30, what=f"the reply {last}")
        env = decode(d.sock.recv())
        if not isinstance(env.msg, Desired):
            got.append(env)
    return got


def test_a_pulse_keeps_its_node_up_unanswered_and_leaves_the_period_it_was_told(server: Server, clock: Clock, tmp_path: Path, nodes24: list[dict[str, Any]]) -> None:
    a = nodes24[0]["name"]
    agent = enrol(server, tmp_path, nodes24[:1])[a]
    try:
        agent.send(encode(Heartbeat(node=a, generation=0), id="hb1", sender=a))
        beat = replies(server, agent, "hb1")[-1].msg
        assert isinstance(beat, Ok) and beat.result["pulses"] == 3 and beat.result["period"] == 1.0, beat
        rec = server.cluster.registry.nodes[a]
        server.cluster.registry.stretch = 2.0  # the controller now wants heartbeats half as often
        clock.now += 2.5
        agent.send(encode(Pulse(node=a, generation=0, usage=Usage(cpu_seconds=7.0)), id="pulse", sender=a))
        agent.send(encode(Ping(), id="ping", sender=a))  # replies keep their order on one connection
        assert [r.id for r in replies(server, agent, "ping")] == ["ping"], "the pulse was answered"
        assert rec.last_seen == clock.now and rec.state == "up" and rec.usage.cpu_seconds == 7.0
        assert rec.period == 1.0, "only an answer tells a node a new period: it still heartbeats every 1 s"
        agent.send(encode(Heartbeat(node=a, generation=0), id="hb2", sender=a))
        beat = replies(server, agent, "hb2")[-1].msg
        told = server.cluster.registry.period()  # by now relaxed a little (the queue is empty): not 1 s
        assert isinstance(beat, Ok) and beat.result["period"] == rec.period == told > 1.0, (beat, told)
    finally:
        agent.close()


def test_a_pulse_from_another_connection_than_its_nodes_is_told_unknown_node(server: Server, clock: Clock, tmp_path: Path, nodes24: list[dict[str, Any]]) -> None:
    """The node's key on a connection it did not register from (libzmq reconnected it, or a
    stale process of the same machine): the pulse is no sign of the registered agent's life,
    and its sender is told, under the pulse's id, so that it registers again. Dropped unseen,
    such pulses let live nodes be marked down (21 in one `bench heartbeat` run)."""
    a = nodes24[0]["name"]
    pair = new_keypair()
    agent = enrol(server, tmp_path, nodes24[:1], {a: pair})[a]
    admin = identity.read(tmp_path / "keys" / "admin.identity.yaml").keys
    other = Dealer(server.url, a, ClientKeys(admin.server, pair))
    try:
        rec = server.cluster.registry.nodes[a]
        seen = rec.last_seen
        clock.now += 1.0
        other.send(encode(Pulse(node=a, generation=0), id="pulse", sender=a))
        told = replies(server, other, "pulse")
        assert len(told) == 1 and isinstance(told[0].msg, Error) and told[0].msg.code == "unknown-node", told
        assert rec.last_seen == seen, "a pulse from another connection kept the node alive"
        agent.send(encode(Pulse(node=a, generation=0), id="mine", sender=a))
        agent.send(encode(Ping(), id="ping", sender=a))
        assert [r.id for r in replies(server, agent, "ping")] == ["ping"], "the registered connection's pulse is not answered"
    finally:
        other.close()
        agent.close()


def test_reports_are_acknowledged_by_silence_and_a_gap_is_told_once(server: Server, clock: Clock, tmp_path: Path, nodes24: list[dict[str, Any]]) -> None:
    """Protocol 2.9: a report in sequence gets no answer; one that skips a number, or a
    heartbeat or pulse that says more were sent than arrived, gets ``report-lost`` under its
    own id, once (the agent then sends every status again); registering numbers afresh."""
    a = nodes24[0]["name"]
    agent = enrol(server, tmp_path, nodes24[:1])[a]

    def told(msg: Any, msg_id: str) -> list[Any]:
        agent.send(encode(msg, id=msg_id, sender=a))
        agent.send(encode(Ping(), id=f"ping-{msg_id}", sender=a))  # replies keep their order on one connection
        return [r for r in replies(server, agent, f"ping-{msg_id}") if r.id != f"ping-{msg_id}"]

    def lost(got: list[Any]) -> bool:
        return len(got) == 1 and isinstance(got[0].msg, Error) and got[0].msg.code == "report-lost"

    try:
        rec = server.cluster.registry.nodes[a]
        agent.send(encode(Heartbeat(node=a, generation=0), id="hb", sender=a))
        beat = replies(server, agent, "hb")[-1].msg
        assert isinstance(beat, Ok) and beat.result["checks_reports"] is True, beat
        assert told(Report(node=a, generation=0, seq=1), "r1") == [], "a report in sequence was answered"
        assert told(Pulse(node=a, generation=0, reported=1), "p1") == []
        assert lost(told(Report(node=a, generation=0, seq=3), "r3")), "report 2 was lost unseen"
        assert told(Report(node=a, generation=0, seq=4), "r4") == [], "a gap was told twice"
        assert lost(told(Pulse(node=a, generation=0, reported=5), "p5")), "report 5 was lost unseen"
        assert rec.reported == 5
        agent.send(encode(Heartbeat(node=a, generation=0, reported=7), id="hb7", sender=a))
        got = replies(server, agent, "hb7")
        assert len(got) == 1 and isinstance(got[0].msg, Error) and got[0].msg.code == "report-lost", got
        assert told(Report(node=a, generation=0, peers_stale=["s"]), "stale") == [], "an unnumbered report is no gap"
        agent.send(encode(Register(node=NodeInfo.from_wire(nodes24[0])), id="again", sender=a))
        assert isinstance(replies(server, agent, "again")[-1].msg, Ok)
        assert rec.reported == 0 and told(Report(node=a, generation=0, seq=1), "r1-again") == [], "registering did not number reports afresh"
    finally:
        agent.close()
