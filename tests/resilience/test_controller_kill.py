"""``kill -9`` of the controller at every named phase of create, delete, renew, re-placement
and drain (``slices/faults.py``), then a restart on the same database and port.

Each test runs a real controller process over 8 simulated nodes holding three slices, arms
one fault point, triggers the operation (from a client that keeps retrying with the same
request id, as the CLI does), sees the controller die exactly there, starts it again without
faults and checks the ledger (``procs.ledger_problems``): no slice lost, duplicated or
half-allocated, every node's allocated capacity the sum of its slivers' reservations, the
store agreeing, the agents running each sliver exactly once; and the operation finished,
answered once, with the answer the first attempt would have had.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from slices.catalogue import builtin_catalogue
from slices.client import Client
from slices.faults import POINTS
from slices.protocol import CreateSlice, DeleteSlice, ListNodes, ListSlices, NodeAdmin, RenewSlice, ShowSlice
from slices.simcluster import sim_nodes
from tests.conftest import AgentsThread, wait_for
from tests.resilience.procs import ControllerProcess, converged, spec

pytestmark = pytest.mark.timeout(120)

VICTIM, SPARE = "tokyo-1", "tokyo-2"  # one site: a sliver asked there can only move between them


@dataclass
class Bed:
    path: Path
    controller: ControllerProcess
    victim: AgentsThread
    rest: AgentsThread
    pool: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1))

    def call(self, msg: Any) -> Future[Any]:
        """Send ``msg`` from a client that retries with its request id until answered."""

        def go() -> Any:
            with Client(self.controller.url, identity=self.controller.admin, timeout=60, first_try=0.3) as c:
                return c.call(msg)

        return self.pool.submit(go)

    def client(self) -> Client:
        return self.controller.client(timeout=10)

    def restart(self, faults: str = "") -> None:
        self.controller = ControllerProcess(self.path, port=self.controller.port, user_port=self.controller.user_port, faults=faults)


@pytest.fixture
def testbed(tmp_path: Path) -> Iterator[Bed]:
    nodes = sim_nodes(builtin_catalogue(), 8, "sim")
    c = ControllerProcess(tmp_path, env={"SLICEMESH_REPLACE_AFTER": "1000"})  # heals nothing: the armed controller does
    victim = AgentsThread(c, [n for n in nodes if n["name"] == VICTIM], state_dir=tmp_path / "victim")  # type: ignore[arg-type]
    rest = AgentsThread(c, [n for n in nodes if n["name"] != VICTIM], state_dir=tmp_path / "rest")  # type: ignore[arg-type]
    bed = Bed(tmp_path, c, victim, rest)
    try:
        with c.client() as cl:
            wait_for(lambda: sum(n.state == "up" for n in cl.call(ListNodes()).nodes) == 8, timeout=30, what="8 nodes up")
            cl.call(NodeAdmin(name=SPARE, action="cordon"))  # so the tokyo sliver lands on the victim
            for doc in (spec("base", 3), spec("doomed", 2), spec("moveme", 1, locations=[{"site": "tokyo"}])):
                cl.call(CreateSlice(spec=doc))
            cl.call(NodeAdmin(name=SPARE, action="uncordon"))
            assert [s.node for s in cl.call(ShowSlice(name="moveme")).slivers] == [VICTIM]
            converged(cl, [victim, rest], c.db)
        yield bed
    finally:
        bed.pool.shutdown(wait=False, cancel_futures=True)
        for group in (bed.victim, bed.rest):
            if group.thread.is_alive():
                group.crash()
        bed.controller.stop()


def trigger_create(bed: Bed) -> Future[Any]:
    return bed.call(CreateSlice(spec=spec("fresh", 3)))


def trigger_delete(bed: Bed) -> Future[Any]:
    return bed.call(DeleteSlice(name="doomed"))


def trigger_renew(bed: Bed) -> Future[Any]:
    return bed.call(RenewSlice(name="base", seconds=3600))


def trigger_heal(bed: Bed) -> None:
    return None  # the victim died before this controller started: its sliver is re-placed after the grace period


def victim_down(bed: Bed) -> None:
    """Before the armed restart, so the restarted controller needs no restart grace to know."""
    bed.victim.crash()
    with bed.client() as c:
        wait_for(lambda: next(n.state for n in c.call(ListNodes()).nodes if n.name == VICTIM) == "down", timeout=10, what=f"{VICTIM} down")


def trigger_drain(bed: Bed) -> Future[Any]:
    return bed.call(NodeAdmin(name=VICTIM, action="drain"))


TRIGGERS: dict[str, Callable[[Bed], Future[Any] | None]] = {
    "create": trigger_create,
    "delete": trigger_delete,
    "renew": trigger_renew,
    "heal": trigger_heal,
    "drain": trigger_drain,
}
#: ``migrate.*`` needs real backends on both nodes: tests/integration/container/test_move_failures.py.
CONTROLLER_POINTS = [p for p in POINTS if not p.startswith(("agent.", "migrate."))]
#: One point per operation runs in the default suite; every point with ``make test-resilience``.
QUICK = {"create.after_store", "delete.after_store", "renew.after_store", "heal.after_replace", "drain.after_new_running"}


def test_every_controller_point_is_tried() -> None:
    assert {p.split(".")[0] for p in CONTROLLER_POINTS} == set(TRIGGERS)


@pytest.mark.parametrize("point", [p if p in QUICK else pytest.param(p, marks=pytest.mark.long) for p in CONTROLLER_POINTS])
def test_controller_killed_at(point: str, testbed: Bed) -> None:
    verb = point.split(".")[0]
    with testbed.client() as c:
        base_expires = c.call(ShowSlice(name="base")).expires
    if verb == "heal":
        victim_down(testbed)
    testbed.controller.stop()
    testbed.restart(faults=point)
    pending = TRIGGERS[verb](testbed)
    testbed.controller.died_at(point)
    testbed.restart()
    answer = pending.result(timeout=60) if pending is not None else None
    live = [testbed.rest] if verb == "heal" else [testbed.victim, testbed.rest]
    with testbed.client() as c:
        expected = {"create": {"base", "doomed", "moveme", "fresh"}, "delete": {"base", "moveme"}}.get(verb, {"base", "doomed", "moveme"})
        wait_for(lambda: {s.name for s in c.call(ListSlices()).slices} == expected, timeout=30, what=f"slices {sorted(expected)}")
        if verb in ("heal", "drain"):
            wait_for(lambda: [s.node for s in c.call(ShowSlice(name="moveme")).slivers] == [SPARE], timeout=30, what=f"the moved sliver on {SPARE}")
        converged(c, live, testbed.controller.db)
        if verb == "create":
            assert answer.name == "fresh" and len(answer.slivers) == 3
            assert sorted(v.id for v in answer.slivers) == sorted(v.id for v in c.call(ShowSlice(name="fresh")).slivers), "the answer is the slice that exists"
        if verb == "delete":
            assert (answer.name, answer.slivers) == ("doomed", 2)
            assert len({r.id for r in answer.released}) == 2, "the released slivers are named, after a crash too"
        if verb == "renew":
            assert answer.expires == pytest.approx(base_expires + 3600), "renewed once, not once per attempt"
            assert c.call(ShowSlice(name="base")).expires == pytest.approx(base_expires + 3600)
        if verb in ("heal", "drain"):
            victim = next(n for n in c.call(ListNodes()).nodes if n.name == VICTIM)
            assert victim.slivers == 0 and victim.allocated.cpu == 0
