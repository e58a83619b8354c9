"""The sim backend's statuses (node_agent/backends/sim.py)."""

from __future__ import annotations

from node_agent.backends.sim import SimBackend
from slices.model import Resources, SliverSpec


def test_a_status_is_given_again_while_its_state_holds_and_made_anew_when_it_changes() -> None:
    b = SimBackend()
    made = b.create(SliverSpec(id="s-1", slice="s", isolation="container", image="busybox", resources=Resources(0.1, 16 << 20)))
    assert made.state == "running" and b.status("s-1") is made and b.list() == [made]
    stopped = b.stop("s-1")
    assert stopped.state == "stopped" and stopped.reason == "stopped by the agent" and b.status("s-1") is stopped
    assert b.start("s-1").state == "running"
    b.destroy("s-1")
    assert b.status("s-1").state == "lost" and b.list() == []
