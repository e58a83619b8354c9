"""Pulses (protocol 2.8): heartbeats that ask for no answer, as real agents send them (how
the controller takes one: tests/integration/test_liveness_backlog.py).

Answering a heartbeat costs the controller and the agent about a third of what the heartbeat
costs them. While an agent has no change of sliver state to be acknowledged, it sends up to
``Beat.pulses`` heartbeats in a row as ``pulse`` notices: the node is seen alive as by a
heartbeat, but only an answer tells it a new period, so a pulse leaves the period the node was
told (by which its silence is judged) as it was.
"""

from __future__ import annotations

import collections
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from slices.codec import decode, encode
from slices.model import Resources, SliverSpec
from slices.protocol import Beat, CreateSlice, Desired, Error, Heartbeat, ListNodes, Message, Ok, Pulse, Register, Report, ShowSlice
from slices.wire import to_wire
from tests.conftest import AgentsThread, ControllerThread, wait_for
from tests.integration.test_agent_peer_sets import Bed
from tests.integration.test_control_plane import spec

pytestmark = pytest.mark.timeout(90)


class Sent:
    """What each agent sends, in order (its ``_send`` wrapped, as it runs)."""

    def __init__(self, agents: AgentsThread) -> None:
        self.by_node: dict[str, list[str]] = collections.defaultdict(list)
        self.lock = threading.Lock()
        for agent in agents.agents:
            agent._send = self._wrap(agent.name, agent._send)  # type: ignore[method-assign]

    def _wrap(self, name: str, send: Any) -> Any:
        def spy(msg: Message) -> None:
            with self.lock:
                self.by_node[name].append(msg.TYPE)
            send(msg)

        return spy

    def beats(self) -> dict[str, list[str]]:
        with self.lock:
            return {n: [t for t in types if t in ("heartbeat", "pulse")] for n, types in self.by_node.items()}


def longest_run(types: list[str], kind: str) -> int:
    best = run = 0
    for t in types:
        run = run + 1 if t == kind else 0
        best = max(best, run)
    return best


def test_idle_agents_pulse_three_times_in_four_and_changes_are_still_acknowledged(cluster: tuple[ControllerThread, AgentsThread]) -> None:
    controller, agents = cluster
    sent = Sent(agents)
    wait_for(lambda: all(len(b) >= 12 for b in sent.beats().values()) and len(sent.beats()) == len(agents.agents), timeout=30, what="a dozen heartbeats from every agent")
    with controller.client() as c:
        c.call(CreateSlice(spec=spec()))  # status changes: sent in heartbeats until acknowledged
        wait_for(lambda: str(c.call(ShowSlice(name="probe")).state) == "running", what="slice running")
        wait_for(lambda: all(len(b) >= 24 for b in sent.beats().values()), timeout=30, what="two dozen heartbeats from every agent")
        assert {n.state for n in c.call(ListNodes()).nodes} == {"up"}
    for node, beats in sent.beats().items():
        assert longest_run(beats, "pulse") <= 3, f"{node}: more pulses in a row than the controller allows: {beats}"
        assert beats.count("pulse") >= len(beats) // 2, f"{node}: an idle agent should mostly pulse: {beats}"


def test_a_controller_that_allows_no_pulses_gets_heartbeats_only(tmp_path: Path, nodes24: list[dict[str, Any]]) -> None:
    """As from a controller before 2.8, whose ``Beat`` has no ``pulses``."""
    controller = ControllerThread(tmp_path / "controller.db", heartbeat_pulses=0)
    agents = AgentsThread(controller, nodes24[:4], state_dir=None)
    try:
        sent = Sent(agents)
        wait_for(lambda: len(sent.beats()) == 4 and all(len(b) >= 8 for b in sent.beats().values()), timeout=30, what="eight heartbeats from every agent")
        assert {t for beats in sent.beats().values() for t in beats} == {"heartbeat"}
    finally:
        agents.stop()
        controller.stop()


def test_a_shorter_period_holds_from_the_answer_that_tells_it() -> None:
    """The controller judges a node's silence by the period it last told it, from the moment
    it answers. An agent that waited out its longer period first was marked down: with
    pulses, a relaxing back-pressure stretch reaches a node in one step (4 s to 1 s), and
    three periods of 1 s ran out before its next beat (770 false downs in a `bench
    heartbeat` run)."""
    bed = Bed()
    try:
        answer(bed, Register, Beat(generation=0, period=2.0, misses=3))
        answer(bed, Heartbeat, Beat(generation=0, period=0.2, misses=3))
        assert bed.agent.period == 0.2
        assert bed.agent.next_beat <= time.time() + 0.2, "the next beat waits out the old 2 s period"
    finally:
        bed.close()


def one_sliver(generation: int) -> Desired:
    return Desired(generation=generation, slivers=[SliverSpec(id="s-0123abcd", slice="s", isolation="container", image="busybox", resources=Resources(0.01, 4 << 20))])


def beat_now(bed: Bed) -> Message:
    """The agent's next heartbeat or pulse, sent now."""
    bed.agent.next_beat = 0.0
    return bed.next((Heartbeat, Pulse))


@pytest.mark.parametrize("checks", [True, False])
def test_a_report_is_acknowledged_by_silence_only_by_a_controller_that_checks_reports(checks: bool) -> None:
    """Protocol 2.9: a controller that numbers reports (``Beat.checks_reports``) tells a lost
    one, so the agent counts a report's statuses acknowledged once sent and its next beat is a
    pulse; to an older controller the next beat is a heartbeat repeating them, as before."""
    bed = Bed()
    try:
        answer(bed, Register, Beat(generation=0, period=1.0, misses=3, pulses=3, checks_reports=checks))
        bed.tell(one_sliver(1))
        report = bed.next(Report)
        assert isinstance(report, Report) and report.seq == 1 and [s.id for s in report.slivers] == ["s-0123abcd"]
        nxt = beat_now(bed)
        if checks:
            assert isinstance(nxt, Pulse) and nxt.reported == 1, nxt
        else:
            assert isinstance(nxt, Heartbeat) and [s.id for s in nxt.slivers] == ["s-0123abcd"] and nxt.reported == 1, nxt
    finally:
        bed.close()


def test_an_agent_told_a_report_was_lost_sends_every_status_again() -> None:
    bed = Bed()
    try:
        answer(bed, Register, Beat(generation=0, period=1.0, misses=3, pulses=3, checks_reports=True))
        bed.tell(one_sliver(1))
        bed.next(Report)
        assert bed.router.send(bed.peer, encode(Error("report-lost", "report 1 from the node never arrived"), id="some-report", sender="controller"))
        wait_for(lambda: bool(bed.agent.dealer.sock.poll(0)), timeout=20, what="the error at the agent")
        bed.agent.on_readable()
        assert bed.agent.registered and bed.agent.next_beat <= time.time(), "the statuses wait for the next period"
        again = bed.next(Heartbeat)
        assert isinstance(again, Heartbeat) and [s.id for s in again.slivers] == ["s-0123abcd"], again
    finally:
        bed.close()


def answer(bed: Bed, kind: type[Message], beat: Beat) -> None:
    """Run ``bed``'s agent until it sends a ``kind`` request, answer it with ``beat``, and have
    the agent read the answer."""
    got: list[tuple[str, bytes]] = []

    def sent() -> bool:
        bed.agent.tick()
        bed.agent.on_readable()
        while (m := bed.router.recv()) is not None:
            env = decode(m[1][0])
            if isinstance(env.msg, kind):
                got.append((env.id, m[0]))
        return bool(got)

    wait_for(sent, timeout=20, what=f"the agent's {kind.TYPE}")
    msg_id, peer = got[0]
    assert bed.router.send(peer, encode(Ok(result=to_wire(beat)), id=msg_id, sender="controller"))
    wait_for(lambda: bool(bed.agent.dealer.sock.poll(0)), timeout=20, what="the answer at the agent")
    bed.agent.on_readable()


def test_an_agent_told_its_pulses_come_from_an_unknown_connection_registers_again() -> None:
    bed = Bed()
    try:
        answer(bed, Register, Beat(generation=0, period=0.2, misses=3, pulses=3))
        assert bed.agent.registered
        bed.next(Pulse)
        assert bed.router.send(bed.peer, encode(Error("unknown-node", "node is not registered from this connection"), id="some-pulse", sender="controller"))
        wait_for(lambda: bool(bed.agent.dealer.sock.poll(0)), timeout=20, what="the error at the agent")
        bed.agent.on_readable()
        assert not bed.agent.registered
        assert isinstance(bed.next(Register), Register)
    finally:
        bed.close()
