"""Slices heal: dead nodes' slivers move (keeping their ids), drains move them before they
stop, and nothing runs twice once a dead node returns. Real controller, simulated agents."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from node_agent.host import AgentHost
from slices.client import Client, RemoteError
from slices.protocol import CreateSlice, DeleteSlice, ListNodes, NodeAdmin, ShowSlice, SliceView
from tests.conftest import AgentsThread, ControllerThread, wait_for

pytestmark = pytest.mark.timeout(90)

DOC: dict[str, Any] = {
    "name": "healer",
    "description": "a slice that must keep its six slivers through failures",
    "resources": {"cpu": 0.5, "memory": "256Mi"},
    "placement": {"count": 6, "distinct": "site"},
}


def show(c: Client) -> SliceView:
    v: SliceView = c.call(ShowSlice(name="healer"))
    return v


def start(c: Client) -> tuple[str, str]:
    """Create the healer slice, wait for it to run; returns its first sliver's (id, node)."""
    c.call(CreateSlice(spec=DOC))
    wait_for(lambda: show(c).state == "running", what="running")
    first = show(c).slivers[0]
    return first.id, first.node


def held(agents: AgentsThread, node: str) -> set[str]:
    a = next(a for a in agents.agents if a.name == node)
    return set(a.backends["container"].slivers)  # type: ignore[attr-defined]


def split(agents: AgentsThread, node: str) -> tuple[AgentHost, AgentsThread]:
    """Crash one node's agent (no goodbye) and return the host that still runs the others."""
    victim = next(a for a in agents.agents if a.name == node)
    agents.host.agents.remove(victim)
    victim.close(goodbye=False)
    return agents.host, agents


def test_a_dead_node_s_slivers_move_and_nothing_runs_twice_when_it_returns(cluster: tuple[ControllerThread, AgentsThread], nodes24: list[dict[str, Any]], tmp_path: Path) -> None:
    controller, agents = cluster
    with controller.client() as c:
        c.call(CreateSlice(spec=DOC))
        wait_for(lambda: show(c).state == "running", what="running")
        before = show(c)
        victim = before.slivers[0]
        agents.crash()
        survivors = AgentsThread(controller, [n for n in nodes24 if n["name"] != victim.node], state_dir=tmp_path / "agents")
        try:
            wait_for(lambda: show(c).state == "running" and victim.node not in {v.node for v in show(c).slivers}, timeout=20, what="re-placed and running")
            after = show(c)
            assert sorted(v.id for v in after.slivers) == sorted(v.id for v in before.slivers), "a sliver keeps its id across a move"
            moved = next(v for v in after.slivers if v.id == victim.id)
            assert moved.moves == 1 and moved.node != victim.node
            assert len({v.site for v in after.slivers}) == 6, "distinct: site still holds for the slice as it is"
            assert any(e.event == "moved" and f"from {victim.node}" in e.detail for e in moved.history)
        finally:
            survivors.stop()
        # the dead node returns (all agents, with their state on disk): its old copy is destroyed
        back = AgentsThread(controller, nodes24, state_dir=tmp_path / "agents")
        try:
            wait_for(lambda: victim.id not in held(back, victim.node), timeout=20, what="the old copy destroyed")
            running = [n["name"] for n in nodes24 if victim.id in held(back, n["name"])]
            assert running == [moved.node], "after convergence each sliver runs exactly once"
        finally:
            back.stop()


def test_keep_waits_for_the_node_and_a_blip_moves_nothing(cluster: tuple[ControllerThread, AgentsThread], nodes24: list[dict[str, Any]], tmp_path: Path) -> None:
    controller, agents = cluster
    with controller.client() as c:
        c.call(CreateSlice(spec={**DOC, "on_node_failure": "keep"}))
        wait_for(lambda: show(c).state == "running", what="running")
        nodes = {v.id: v.node for v in show(c).slivers}
        agents.crash()
        wait_for(lambda: show(c).state == "failed", what="all lost")
        import time

        time.sleep(2.5)  # well past the grace period (3 periods of 0.2 s)
        assert {v.id: v.node for v in show(c).slivers} == nodes, "keep: nothing moves"
        back = AgentsThread(controller, nodes24, state_dir=tmp_path / "agents")
        try:
            wait_for(lambda: show(c).state == "running", what="back where they were")
            assert {v.id: v.node for v in show(c).slivers} == nodes
        finally:
            back.stop()


def test_a_sliver_that_fits_nowhere_leaves_the_slice_degraded_with_the_reason(controller: ControllerThread, nodes24: list[dict[str, Any]], tmp_path: Path) -> None:
    jp = [n for n in nodes24 if n["location"]["country"] == "JP"]
    agents = AgentsThread(controller, jp, state_dir=tmp_path / "agents")
    with controller.client() as c:
        wait_for(lambda: len(c.call(ListNodes()).nodes) == len(jp), what="registered")
        c.call(CreateSlice(spec={**DOC, "placement": {"locations": [{"country": "JP", "count": 2}], "distinct": "none"}}))
        wait_for(lambda: show(c).state == "running", what="running")
        first = show(c).slivers[0].node
        victim = next(a for a in agents.agents if a.name == first)
        agents.host.agents.remove(victim)
        victim.close(goodbye=False)
        wait_for(lambda: show(c).state == "degraded" and "cannot be re-placed" in (show(c).problem or ""), timeout=20, what="degraded, with why")
        assert "country JP" in (show(c).problem or "")
    agents.stop()


def test_drain_starts_the_new_copy_before_the_old_one_stops(cluster: tuple[ControllerThread, AgentsThread]) -> None:
    controller, agents = cluster
    with controller.client() as c:
        sid, node = start(c)

        def moved_off() -> bool:
            return next(v for v in show(c).slivers if v.id == sid).node != node and sid not in held(agents, node)

        c.call(NodeAdmin(name=node, action="drain"))
        wait_for(moved_off, timeout=20, what="moved off the draining node")
        moved = next(v for v in show(c).slivers if v.id == sid)
        kinds = [e.event for e in moved.history]
        assert kinds.index("moving") < kinds.index("moved"), kinds
        assert show(c).state == "running"
        views = {n.name: n for n in c.call(ListNodes()).nodes}
        assert views[node].admin == "draining" and views[node].slivers == 0 and views[node].allocated.cpu == 0
        with pytest.raises(RemoteError):  # a draining node takes nothing new
            c.call(CreateSlice(spec={**DOC, "name": "pinned", "placement": {"count": 1, "exclude": {"nodes": [n.name for n in views.values() if n.name != node]}}}))


def test_cordon_uncordon_and_remove(cluster: tuple[ControllerThread, AgentsThread]) -> None:
    controller, _ = cluster
    with controller.client() as c:
        _, node = start(c)
        c.call(NodeAdmin(name=node, action="cordon"))
        others = [n.name for n in c.call(ListNodes()).nodes if n.name != node]
        only_there = {**DOC, "name": "only-there", "placement": {"count": 1, "exclude": {"nodes": others}}}
        with pytest.raises(RemoteError) as err:
            c.call(CreateSlice(spec=only_there))
        assert "cordoned or draining" in err.value.reason
        c.call(NodeAdmin(name=node, action="uncordon"))
        c.call(CreateSlice(spec=only_there))
        with pytest.raises(RemoteError) as err:
            c.call(NodeAdmin(name=node, action="remove"))
        assert err.value.code == "conflict" and "holds 2 slivers" in err.value.reason
        with pytest.raises(RemoteError) as err:  # the pinned slice's sliver can go nowhere else
            c.call(NodeAdmin(name=node, action="remove", force=True))
        assert "only-there" in err.value.reason and "fit nowhere else" in err.value.reason
        c.call(DeleteSlice(name="only-there"))
        c.call(NodeAdmin(name=node, action="remove", force=True))
        assert node not in {n.name for n in c.call(ListNodes()).nodes}
        wait_for(lambda: show(c).state == "running", what="its sliver running elsewhere")
        time.sleep(1.0)  # a negative check: give the revoked agent a few heartbeats' chance
        assert node not in {n.name for n in c.call(ListNodes()).nodes}, "its agent (key revoked) cannot bring it back"


def test_a_clean_agent_stop_says_stopped_not_down(cluster: tuple[ControllerThread, AgentsThread]) -> None:
    controller, agents = cluster
    with controller.client() as c:
        agents.stop()  # SIGTERM-like: each agent says goodbye
        wait_for(lambda: all(n.state == "stopped" for n in c.call(ListNodes()).nodes), timeout=5, what="stopped")
