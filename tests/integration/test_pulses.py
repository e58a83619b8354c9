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
from pathlib import Path
from typing import Any

import pytest

from slices.protocol import CreateSlice, ListNodes, Message, ShowSlice
from tests.conftest import AgentsThread, ControllerThread, wait_for
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
