"""Waits that are told, not polled: answered on change, settle or deletion, with progress."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from slices.client import RemoteError
from slices.protocol import CreateSlice, DeleteSlice, ListNodes, Progress, ShowSlice, WaitSlice
from tests.conftest import AgentsThread, ControllerThread, wait_for

pytestmark = pytest.mark.timeout(60)

DOC = {"name": "waited", "description": "a slice somebody waits for", "resources": {"cpu": 0.1, "memory": "64Mi"}, "placement": {"count": 4, "distinct": "none"}}


def test_a_wait_is_answered_when_the_slice_settles_with_progress_meanwhile(cluster: tuple[ControllerThread, AgentsThread]) -> None:
    controller, _ = cluster
    seen: list[Progress] = []
    with controller.client() as c:
        c.call(CreateSlice(spec=DOC))
        p = c.wait("waited", "settled", 10, on_progress=seen.append)
        assert p.settled and p.state == "running" and p.running == p.wanted == 4 and not p.timed_out
        assert all(s.name == "waited" for s in seen)


def test_a_wait_on_nothing_changing_costs_nothing_and_times_out(cluster: tuple[ControllerThread, AgentsThread]) -> None:
    controller, _ = cluster
    with controller.client() as c:
        c.call(CreateSlice(spec=DOC))
        settled = c.wait("waited", "settled", 10)
        import threading

        t0 = time.monotonic()
        got: list[Progress] = []
        t = threading.Thread(target=lambda: got.append(c.call(WaitSlice(name="waited", until="change", seen=settled.version, timeout=1.0), timeout=5, retry=False)))
        t.start()
        wait_for(lambda: controller.server.waits.count == 1, what="the wait parked")
        t.join(timeout=5)
        assert got[0].timed_out and 0.9 <= time.monotonic() - t0 < 2.5
        assert controller.server.waits.count == 0, "answered once, at its deadline, and gone"


def test_a_change_wakes_a_watcher(cluster: tuple[ControllerThread, AgentsThread]) -> None:
    controller, agents = cluster
    with controller.client() as c, controller.client() as other:
        c.call(CreateSlice(spec=DOC))
        p = c.wait("waited", "settled", 10)
        import threading

        got: list[Progress] = []
        t = threading.Thread(target=lambda: got.append(c.wait("waited", "change", 20, seen=p.version)))
        t.start()
        time.sleep(0.3)
        assert not got
        node = other.call(ShowSlice(name="waited")).slivers[0].node
        next(a for a in agents.agents if a.name == node).backends["container"].slivers.clear()  # type: ignore[attr-defined]
        t.join(timeout=15)
        assert got and got[0].version > p.version and not got[0].timed_out


def test_delete_wait_returns_once_every_node_removed_it(cluster: tuple[ControllerThread, AgentsThread]) -> None:
    controller, agents = cluster
    with controller.client() as c:
        c.call(CreateSlice(spec=DOC))
        c.wait("waited", "settled", 10)
        c.call(DeleteSlice(name="waited"))
        p = c.wait("waited", "deleted", 10)
        assert p.state == "deleted"
        assert not any(sid.startswith("waited-") for a in agents.agents for sid in a.backends["container"].slivers)  # type: ignore[attr-defined]


def test_waits_are_bounded_and_see_only_visible_slices(controller: ControllerThread, tmp_path: Path, nodes24: list[dict[str, Any]]) -> None:
    agents = AgentsThread(controller, nodes24[:4], state_dir=tmp_path / "a")
    try:
        with controller.client() as c:
            wait_for(lambda: len(c.call(ListNodes()).nodes) == 4, what="nodes")
            c.call(CreateSlice(spec=DOC))
        with controller.as_user("eve", site="elsewhere") as eve, pytest.raises(RemoteError) as err:
            eve.call(WaitSlice(name="waited", until="settled", timeout=1), retry=False)
        assert err.value.code == "not-found"
    finally:
        agents.stop()


def test_a_brief_create_reply_has_the_slice_but_not_its_rows(cluster: tuple[ControllerThread, AgentsThread]) -> None:
    """``create --wait`` asks for the brief reply: the slice is shown whole once it settles."""
    controller, _ = cluster
    with controller.client() as c:
        brief = c.call(CreateSlice(spec=DOC, brief=True))
        assert (brief.name, brief.slivers_placed, brief.slivers, brief.timeline) == ("waited", 4, [], [])
        assert c.wait("waited", "settled", 10).state == "running"
        full = c.call(ShowSlice(name="waited"))
        assert len(full.slivers) == 4 and full.timeline
