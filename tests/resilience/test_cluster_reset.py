"""The controller's database is lost: the new cluster is begun on purpose, and the slivers
nodes still run become orphans that an operator adopts or destroys, never a silent half state."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from slices.protocol import CreateSlice, ListNodes, ListSlices, Orphans, ShowSlice
from tests.conftest import AgentsThread, ControllerThread, wait_for

pytestmark = pytest.mark.timeout(90)

DOC = {"name": "survivor", "description": "a slice whose controller loses its database", "resources": {"cpu": 0.1, "memory": "64Mi"}, "placement": {"count": 3, "distinct": "none"}}


def lose_the_database(tmp_path: Path, nodes: list[dict[str, Any]]) -> tuple[ControllerThread, AgentsThread, dict[str, float]]:
    first = ControllerThread(tmp_path / "c.db")
    agents = AgentsThread(first, nodes[:4], state_dir=tmp_path / "agents")
    with first.client() as c:
        wait_for(lambda: len(c.call(ListNodes()).nodes) == 4, what="registered")
        c.call(CreateSlice(spec=DOC))
        wait_for(lambda: c.call(ShowSlice(name="survivor")).state == "running", what="running")
    started = {sid: rec["started"] for a in agents.agents for sid, rec in a.backends["container"].slivers.items()}  # type: ignore[attr-defined]
    first.stop()
    for suffix in ("", "-wal", "-shm"):
        Path(str(tmp_path / "c.db") + suffix).unlink(missing_ok=True)
    second = ControllerThread(tmp_path / "c.db", **first.endpoints(), new_cluster=True)
    second.trust(agents.keys)  # the new database knows no keys: the operator accepts the nodes again
    return second, agents, started


def orphaned(c: ControllerThread) -> int:
    with c.client() as cl:
        return len(cl.call(Orphans()).orphans)


def test_orphans_keep_running_until_adopted_where_they_run(tmp_path: Path, nodes24: list[dict[str, Any]]) -> None:
    c, agents, started = lose_the_database(tmp_path, nodes24)
    try:
        wait_for(lambda: orphaned(c) == 3, what="three orphans reported")
        with c.client() as cl:
            assert cl.call(ListSlices()).slices == []
            assert sum(n.orphans for n in cl.call(ListNodes()).nodes) == 3
            done = cl.call(Orphans(action="adopt"))
            assert done.changed == 3
            wait_for(lambda: cl.call(ShowSlice(name="survivor")).state == "running", what="adopted slice running")
            shown = cl.call(ShowSlice(name="survivor"))
            assert sorted(v.id for v in shown.slivers) == sorted(started)
        wait_for(lambda: all(not a.orphans for a in agents.agents), what="agents hold no orphans")
        now = {sid: rec["started"] for a in agents.agents for sid, rec in a.backends["container"].slivers.items()}  # type: ignore[attr-defined]
        assert now == started, "adopted where they ran: nothing restarted"
    finally:
        agents.stop()
        c.stop()


def test_orphans_are_destroyed_only_when_an_operator_says_so(tmp_path: Path, nodes24: list[dict[str, Any]]) -> None:
    c, agents, started = lose_the_database(tmp_path, nodes24)
    try:
        wait_for(lambda: orphaned(c) == 3, what="three orphans reported")
        held = {sid for a in agents.agents for sid in a.backends["container"].slivers}  # type: ignore[attr-defined]
        assert held == set(started), "until then they run"
        with c.client() as cl:
            assert cl.call(Orphans(action="destroy")).changed == 3
        wait_for(lambda: not any(a.backends["container"].slivers for a in agents.agents), what="destroyed")  # type: ignore[attr-defined]
        wait_for(lambda: orphaned(c) == 0, what="no orphans left")
    finally:
        agents.stop()
        c.stop()
