"""The sim backend's statuses and records file (node_agent/backends/sim.py)."""

from __future__ import annotations

import json
from pathlib import Path

from node_agent.backends.sim import SimBackend
from slices.model import Resources, SliverSpec
from slices.statefile import SCRATCH, read_scratch


def test_a_status_is_given_again_while_its_state_holds_and_made_anew_when_it_changes() -> None:
    b = SimBackend()
    made = b.create(SliverSpec(id="s-1", slice="s", isolation="container", image="busybox", resources=Resources(0.1, 16 << 20)))
    assert made.state == "running" and b.status("s-1") is made and b.list() == [made]
    stopped = b.stop("s-1")
    assert stopped.state == "stopped" and stopped.reason == "stopped by the agent" and b.status("s-1") is stopped
    assert b.start("s-1").state == "running"
    b.destroy("s-1")
    assert b.status("s-1").state == "lost" and b.list() == []


def test_its_records_file_holds_every_change_made_before_a_flush(tmp_path: Path) -> None:
    path = tmp_path / "sim.json"
    b = SimBackend(path)
    for sid in ("s-1", "s-2", "s-3"):
        b.create(SliverSpec(id=sid, slice="s", isolation="container", image="busybox", resources=Resources(0.1, 16 << 20)))
    b.flush()
    b.stop("s-2")
    b.destroy("s-3")
    b.flush()
    SCRATCH.flush()
    assert json.loads(read_scratch(path) or b"") == b.slivers and set(b.slivers) == {"s-1", "s-2"}
    assert SimBackend(path).slivers == b.slivers and b.slivers["s-2"]["state"] == "stopped", "read back as written"
