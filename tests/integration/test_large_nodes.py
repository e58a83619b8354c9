"""A node's desired set larger than one message arrives in parts and is applied whole."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from slices.protocol import CreateSlice, ListNodes, ShowSlice
from tests.conftest import AgentsThread, ControllerThread, wait_for

pytestmark = pytest.mark.timeout(60)


def test_desired_sets_in_parts(tmp_path: Path, nodes24: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    import controller.server

    monkeypatch.setattr(controller.server, "DESIRED_PART", 7)  # 30 slivers: five parts of seven, one of two
    c = ControllerThread(tmp_path / "c.db")
    agents = AgentsThread(c, nodes24[:1], state_dir=tmp_path / "agents")
    try:
        with c.client() as cl:
            wait_for(lambda: len(cl.call(ListNodes()).nodes) == 1, what="registered")
            for i in range(30):
                cl.call(CreateSlice(spec={"name": f"p{i}", "description": "one of many slices on one node", "resources": {"cpu": 0.01, "memory": "8Mi"}}))
            wait_for(lambda: len(agents.agents[0].desired) == 30, what="all 30 applied")
            wait_for(lambda: all(cl.call(ShowSlice(name=f"p{i}")).state == "running" for i in range(30)), what="all running")
            assert not agents.agents[0]._parts, "no half set is left waiting"
    finally:
        agents.stop()
        c.stop()
