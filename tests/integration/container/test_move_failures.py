"""Cold moves broken on purpose, on ``slicemesh sim --backend real`` with two machines, each in
its own agent process (so one can die alone), killed at a named phase (slices/faults.py):

* the target dies holding the verified disk, before it started the sliver: the move is taken
  back and the sliver runs again where it was, with its files; when the target returns, it
  holds no copy;
* the source dies after it stopped the sliver, before sending, or half-way through sending
  (the transfer is cut): the move is taken back and the dead node's sliver is healed
  elsewhere; when the source returns, its stopped copy is gone;
* the controller dies after the target said where it listens, before the source was told:
  restarted, it goes on, and the sliver arrives with its files.

After convergence the sliver exists on exactly one node (never both, never neither)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ctr_helpers import PREFIX

from slices.client import Client
from slices.protocol import CreateSlice, DeleteSlice, ExecSliver, ListNodes, MigrateSlice, ShowSlice
from slices.simcluster import SimCluster
from tests.conftest import wait_for

pytestmark = pytest.mark.timeout(240)

TOPOLOGY = """site,city,country,continent,lat,lon,machines
princeton,Princeton,US,NA,40.3431,-74.6551,1
berlin,Berlin,DE,EU,52.52,13.40,1
"""
NODES = {"princeton-1", "berlin-1"}


@pytest.fixture
def make_lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    made: list[SimCluster] = []

    def make(faults: str) -> SimCluster:
        monkeypatch.setenv("SLICEMESH_FAULTS", faults)  # read by every process the sim starts
        csv = tmp_path / "two.csv"
        csv.write_text(TOPOLOGY)
        sim = SimCluster(
            nodes=None, topology=str(csv), backend="real", prefix=PREFIX + "f", heartbeat_period=0.3, state_dir=str(tmp_path / "sim"),
            per_process=1, first_subnet=random.randrange(4096, 6000), wan=None,
        )  # fmt: skip
        made.append(sim)
        sim.start(timeout=120)
        return sim

    yield make
    for sim in made:
        sim.stop()


def placed(c: Client) -> dict[str, Any]:
    """A one-sliver container slice that may run anywhere, with a file written in it."""
    c.call(CreateSlice(spec={"name": "mover", "description": "moves", "resources": {"cpu": 0.2, "memory": "64Mi", "disk": "64Mi"}, "placement": {"count": 1}}))
    view = wait_for(lambda: (v := c.call(ShowSlice(name="mover"))).state == "running" and v, 60, "the slice to run")
    sliver = view.slivers[0]
    r = c.call(ExecSliver(slice="mover", argv=["/bin/sh", "-c", "echo kept > /var/kept"], timeout=30), timeout=60, retry=False)
    assert r.exit_code == 0
    return {"id": sliver.id, "source": sliver.node, "target": (NODES - {sliver.node}).pop()}


def moving(c: Client) -> dict[str, Any]:
    """The slice placed, its file written, and its move to the other node begun."""
    m = placed(c)
    c.call(MigrateSlice(slice="mover", to=m["target"]))
    return m


def where(c: Client) -> tuple[str, str, list[str]]:
    s = c.call(ShowSlice(name="mover")).slivers[0]
    return s.node, s.state, [e.event for e in s.history]


def copies(sim: SimCluster, sliver: str) -> list[str]:
    """The nodes whose agent state holds this sliver (a container's directory)."""
    return sorted({p.relative_to(sim.dir / "agents").parts[0] for p in (sim.dir / "agents").glob(f"*/**/slivers/{sliver}")})


def read_file(c: Client) -> str:
    out: list[bytes] = []
    r = c.call(ExecSliver(slice="mover", argv=["cat", "/var/kept"], timeout=30), timeout=60, retry=False, on_output=lambda s, d: out.append(d))
    return b"".join(out).decode().strip() if r.exit_code == 0 else f"exit {r.exit_code}"


def test_target_dies_holding_the_disk_and_the_sliver_runs_on_where_it_was(make_lab: Any) -> None:
    sim = make_lab("agent.move.target_received")
    with sim.client(timeout=30) as c:
        m = moving(c)
        wait_for(lambda: m["target"] in sim.machines.failed or sim.machines.reap(), 60, "the target to die at its fault point")
        wait_for(lambda: (w := where(c))[1] == "running" and "move failed" in w[2] and w, 60, "the move to be taken back")
        assert where(c)[0] == m["source"]
        assert read_file(c) == "kept"
        sim.machines.restore(m["target"])
        wait_for(lambda: copies(sim, m["id"]) == [m["source"]], 60, "the target to drop its copy")
        assert where(c)[:2] == (m["source"], "running")


@pytest.mark.parametrize("point", ["agent.move.source_stopped", "agent.move.mid_send"], ids=["after-stop", "transfer-cut"])
def test_source_dies_mid_move_and_the_sliver_is_healed_elsewhere(make_lab: Any, point: str) -> None:
    sim = make_lab(point)
    with sim.client(timeout=30) as c:
        m = moving(c)
        wait_for(lambda: sim.machines.reap() or m["source"] in sim.machines.failed, 60, "the source to die at its fault point")
        wait_for(lambda: (w := where(c))[:2] == (m["target"], "running") and w, 90, "the sliver to be healed on the other node")
        assert "move failed" in where(c)[2]
        sim.machines.restore(m["source"])
        wait_for(lambda: copies(sim, m["id"]) == [m["target"]], 60, "the returned source to drop its stopped copy")


def test_controller_dies_between_target_and_source_and_the_move_goes_on(make_lab: Any) -> None:
    sim = make_lab("migrate.target_ready")
    with sim.client(timeout=30) as c:
        m = moving(c)
    wait_for(lambda: sim.controller.poll() is not None, 60, "the controller to die at its fault point")
    sim.procs.remove(sim.controller)
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("SLICEMESH_FAULTS")
        sim.start_controller()  # on the same port and database: the agents find it again
    sim.procs.insert(0, sim.procs.pop())  # it is the simulation's controller again
    with sim.client(timeout=30) as c:
        wait_for(lambda: (w := where(c))[:2] == (m["target"], "running") and w, 120, "the move to complete after the restart")
        assert read_file(c) == "kept"
        wait_for(lambda: copies(sim, m["id"]) == [m["target"]], 60, "the source to drop its copy")


def test_a_slice_deleted_mid_move_leaves_no_copy_on_either_node(make_lab: Any) -> None:
    sim = make_lab("")
    with sim.client(timeout=30) as c:
        m = moving(c)
        c.call(DeleteSlice(name="mover"))  # the target's copy is being made, or waiting for its disk
        assert c.wait("mover", "deleted", 60).state == "deleted"
        wait_for(lambda: copies(sim, m["id"]) == [], 60, "both nodes to drop every copy")
        nodes = c.call(ListNodes()).nodes
        assert all(n.allocated.cpu == 0 for n in nodes), [(n.name, n.allocated) for n in nodes]  # nothing still charged
