"""One desired set in flight per node (controller/server.py ``_push``, ``Cluster.hold``): a
node whose last set is not applied yet is sent no other; the changes made meanwhile go in one
set once it is, or a heartbeat period after the last one when the agent never says (the set
or its report lost). Without it, an agent slower than the changes had a queue of sets in
libzmq's pipe that it would only skip, and the controller's memory grew with the queue (the
long load test: 70 MiB in its second half)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from controller.server import Server
from slices import identity
from slices.codec import decode, encode
from slices.protocol import CreateSlice, DeleteSlice, Desired, Heartbeat, Ok, Report
from slices.transport import Dealer
from tests.conftest import answer, enrol, wait_for
from tests.resilience.procs import spec

pytestmark = pytest.mark.timeout(90)


def next_set(server: Server, agent: Dealer) -> Desired:
    """Turn the controller until ``agent`` is sent a desired set."""
    while True:
        wait_for(lambda: server.turn(0.02) or bool(agent.sock.poll(0)), timeout=30, what="a desired set")
        msg = decode(agent.sock.recv()).msg
        if isinstance(msg, Desired):
            return msg


def test_a_node_is_sent_one_set_at_a_time_and_then_all_that_changed_meanwhile(hand_server: Server, tmp_path: Path, nodes24: list[dict[str, Any]]) -> None:
    server = hand_server
    node = {**nodes24[0], "images": ["busybox"]}
    a = node["name"]
    agent = enrol(server, tmp_path, [node])[a]
    user = Dealer(server.user_url, "admin", identity.read(tmp_path / "keys" / "admin.identity.yaml").keys)
    rec = server.cluster.registry.nodes[a]

    def create(name: str) -> None:
        user.send(encode(CreateSlice(spec=spec(name, 1)), id=name, sender="admin"))
        assert isinstance(answer(server, user), Ok)
        server.turn(0.0)  # its set's push, or its hold

    try:
        first = next_set(server, agent)  # the registration's
        assert first.generation == rec.generation and first.slivers == []
        agent.send(encode(Report(node=a, generation=first.generation), id="rep0", sender=a))
        wait_for(lambda: server.turn(0.02) or rec.applied == first.generation, timeout=30, what="the report")
        create("s1")
        one = next_set(server, agent)
        assert [s.slice for s in one.slivers] == ["s1"] and one.base == -1, "its last set applied: sent at once, whole (to an agent before 2.10)"
        pushes = server.stats.pushes
        create("s2")
        create("s3")
        assert server.stats.pushes == pushes and a in server.cluster.held_nodes, "s1's set not applied yet: nothing more sent"
        assert rec.generation > one.generation
        agent.send(encode(Report(node=a, generation=one.generation), id="rep1", sender=a))
        both = next_set(server, agent)
        assert both.generation == rec.generation and sorted(s.slice for s in both.slivers) == ["s1", "s2", "s3"], "one set with every change made meanwhile"
        assert server.stats.pushes == pushes + 1 and a not in server.cluster.held_nodes

        # Its report lost: the next heartbeat says it applied the set, and the held change goes.
        create("s4")
        assert a in server.cluster.held_nodes
        agent.send(encode(Heartbeat(node=a, generation=both.generation), id="hb1", sender=a))
        four = next_set(server, agent)
        assert sorted(s.slice for s in four.slivers) == ["s1", "s2", "s3", "s4"]

        # The set lost: a heartbeat a period later shows the node behind, and it is sent again
        # with what changed since.
        create("s5")
        assert a in server.cluster.held_nodes
        server.clock.now += rec.period + 0.1
        agent.send(encode(Heartbeat(node=a, generation=both.generation), id="hb2", sender=a))
        again = next_set(server, agent)
        assert again.generation == rec.generation and len(again.slivers) == 5
    finally:
        user.close()
        agent.close()


def test_an_agent_that_takes_changes_is_sent_what_changed_since_the_set_it_applied(hand_server: Server, tmp_path: Path, nodes24: list[dict[str, Any]]) -> None:
    """Protocol 2.10: to an agent that says so at registration, a set goes as the changes
    since the last one it applied (``Desired.base``); whole when that one is not known to be
    applied (a period without its report) or when the agent asks (``Report.resync``)."""
    server = hand_server
    node = {**nodes24[0], "images": ["busybox"]}
    a = node["name"]
    agent = enrol(server, tmp_path, [node], deltas=True)[a]
    user = Dealer(server.user_url, "admin", identity.read(tmp_path / "keys" / "admin.identity.yaml").keys)
    rec = server.cluster.registry.nodes[a]

    def call(msg: Any, rid: str) -> None:
        user.send(encode(msg, id=rid, sender="admin"))
        assert isinstance(answer(server, user), Ok)
        server.turn(0.0)

    def applied(msg: Desired) -> Desired:
        agent.send(encode(Report(node=a, generation=msg.generation), id=f"rep{msg.generation}", sender=a))
        wait_for(lambda: server.turn(0.02) or rec.applied == msg.generation, timeout=30, what="the report")
        return msg

    try:
        first = applied(next_set(server, agent))
        assert first.base == -1, "the first set after registering goes whole"
        call(CreateSlice(spec=spec("s1", 1)), "c1")
        one = applied(next_set(server, agent))
        assert one.base == first.generation and [s.slice for s in one.slivers] == ["s1"] and one.removed == []
        s1 = one.slivers[0].id
        call(CreateSlice(spec=spec("s2", 1)), "c2")
        two = applied(next_set(server, agent))
        assert two.base == one.generation and [s.slice for s in two.slivers] == ["s2"], "s1, unchanged, is not sent again"
        call(DeleteSlice(name="s1"), "d1")
        gone = applied(next_set(server, agent))
        assert gone.base == two.generation and gone.slivers == [] and gone.removed == [s1], "only the id of what went"

        call(CreateSlice(spec=spec("s3", 1)), "c3")
        unacked = next_set(server, agent)
        assert unacked.base == gone.generation and [s.slice for s in unacked.slivers] == ["s3"]
        call(CreateSlice(spec=spec("s4", 1)), "c4")
        server.clock.now += rec.period + 0.1  # no report for a period: the set or its report was lost
        agent.send(encode(Heartbeat(node=a, generation=gone.generation), id="hb", sender=a))
        whole = applied(next_set(server, agent))
        assert whole.base == -1 and sorted(s.slice for s in whole.slivers) == ["s2", "s3", "s4"], "not known to be applied: whole"

        agent.send(encode(Report(node=a, generation=whole.generation, resync=True), id="resync", sender=a))
        again = next_set(server, agent)
        assert again.base == -1 and len(again.slivers) == 3, "asked for it whole: sent whole, at once"
    finally:
        user.close()
        agent.close()
