"""A big slice is written, and deleted, in parts (controller/store.py): each part its own
transaction, so no step holds the controller's loop for the whole slice, and a crash between
parts leaves nothing behind: the slice was made whole, or not at all. A real store file, read
between steps by a second connection as a restarted controller would read it."""

from __future__ import annotations

import sqlite3
from collections.abc import Generator
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from benchmarks.common import slice_doc
from controller.cluster import Cluster
from controller.registry import Registry
from controller.steps import complete
from controller.store import DELETING, PART_ROWS, WRITING, Store
from controller.storefile import StoreError
from tests.clock import Clock
from tests.inprocess import cluster_of

pytestmark = pytest.mark.timeout(120)

SLIVERS = 2 * PART_ROWS + PART_ROWS // 2  # three parts, the last one half full
NODES = SLIVERS  # a slice has one sliver per node


def big(name: str) -> dict[str, Any]:
    return slice_doc(name, SLIVERS, distinct="none", cpu=0.01, memory="4Mi")


def stored(path: Path, name: str) -> tuple[str | None, int, int]:
    """(the slice's state, its sliver rows, their allocation rows) as another reader sees them."""
    with sqlite3.connect(path) as db:
        row = db.execute("SELECT state FROM slices WHERE name=?", (name,)).fetchone()
        slivers = db.execute("SELECT count(*) FROM slivers WHERE slice=?", (name,)).fetchone()[0]
        allocations = db.execute("SELECT count(*) FROM allocations a JOIN slivers s ON s.id = a.sliver WHERE s.slice=?", (name,)).fetchone()[0]
        orphans = db.execute("SELECT count(*) FROM allocations WHERE sliver NOT IN (SELECT id FROM slivers)").fetchone()[0]
    assert orphans == 0, "an allocation outlived its sliver"
    return (row[0] if row else None), slivers, allocations


def reopened(path: Path, clock: Clock) -> Cluster:
    """The cluster a controller started on this file would have (what a crash leaves)."""
    return Cluster(Store(str(path)), Registry(period=1.0, rate=2000.0, misses=3), clock)


def steps_until(gen: Generator[None, None, Any], done: Any) -> None:
    """Step ``gen`` until ``done()`` holds (it must, before the end)."""
    while not done():
        next(gen)


def used_cpu(cluster: Cluster) -> float:
    return sum(rec.used.cpu for rec in cluster.registry)


def test_a_big_create_is_stored_unfinished_in_parts_and_made_in_its_last_step(tmp_path: Path) -> None:
    cluster, clock = cluster_of(tmp_path, NODES)
    path = tmp_path / "c.db"
    cluster.store.applying = ("key", "req-1")  # as the server sets it for the request's every step
    gen = cluster.create_steps(big("big"), "admin", "req-1", clock(), site="-")
    seen: set[tuple[str | None, int]] = set()
    with pytest.raises(StopIteration):
        while True:
            next(gen)
            state, slivers, allocations = stored(path, "big")
            assert slivers == allocations
            seen.add((state, slivers))
            assert "big" not in cluster.slices, "in memory only once made"
            assert cluster.store.reply_to(("key", "req-1")) is None, "not marked applied before its last step"
    assert {(WRITING, PART_ROWS), (WRITING, 2 * PART_ROWS), (WRITING, SLIVERS)} <= seen, seen
    assert stored(path, "big") == ("pending", SLIVERS, SLIVERS)
    assert cluster.store.reply_to(("key", "req-1")) is not None
    assert len(cluster.slices["big"].slivers) == SLIVERS and cluster.changing == 0
    assert used_cpu(cluster) == pytest.approx(SLIVERS * 0.01)
    again = reopened(path, clock)
    assert len(again.slices["big"].slivers) == SLIVERS


def test_a_crash_between_the_parts_of_a_create_leaves_no_slice(tmp_path: Path) -> None:
    cluster, clock = cluster_of(tmp_path, NODES)
    path = tmp_path / "c.db"
    gen = cluster.create_steps(big("big"), "admin", "req-1", clock(), site="-")
    steps_until(gen, lambda: stored(path, "big")[1] == PART_ROWS)  # one part of three written; then the controller dies
    after = reopened(path, clock)
    assert "big" not in after.slices and not after.slivers
    assert stored(path, "big") == (None, 0, 0), "the start removed what the crash left"
    assert used_cpu(after) == 0
    complete(after.create_steps(big("big"), "admin", "req-1", clock(), site="-"))  # the retry is made whole
    assert stored(path, "big") == ("pending", SLIVERS, SLIVERS)


def test_a_create_whose_last_write_fails_removes_its_parts(tmp_path: Path) -> None:
    cluster, clock = cluster_of(tmp_path, NODES)
    path = tmp_path / "c.db"

    def audit() -> None:  # written in the create's own transaction, as the audit entry is
        raise StoreError("the disk is full")

    gen = cluster.create_steps(big("big"), "admin", "req-1", clock(), site="-", note=audit)
    steps_until(gen, lambda: stored(path, "big")[1] == SLIVERS)  # every part written; not yet made
    with pytest.raises(StoreError, match="the disk is full"):
        complete(gen)
    assert stored(path, "big") == (None, 0, 0) and "big" not in cluster.slices and cluster.changing == 0
    assert used_cpu(cluster) == 0
    complete(cluster.create_steps(big("big"), "admin", "req-2", clock(), site="-"))
    assert stored(path, "big") == ("pending", SLIVERS, SLIVERS)


def test_a_big_delete_is_made_in_its_first_step_and_its_rows_removed_in_parts(tmp_path: Path) -> None:
    cluster, clock = cluster_of(tmp_path, NODES)
    path = tmp_path / "c.db"
    complete(cluster.create_steps(big("big"), "admin", "req-1", clock(), site="-"))
    gen = cluster.delete_steps("big")
    next(gen)
    assert "big" not in cluster.slices and not cluster.slivers and used_cpu(cluster) == 0, "gone from memory, its capacity free"
    assert cluster.changing == 1, "other changes wait until its rows are gone"
    state, slivers, _ = stored(path, "big")
    assert state == DELETING and slivers in (SLIVERS, SLIVERS - PART_ROWS)
    sizes = [slivers]
    with pytest.raises(StopIteration):
        while True:
            next(gen)
            sizes.append(stored(path, "big")[1])
    sizes.append(stored(path, "big")[1])
    assert sizes[-1] == 0 and len(sizes) >= 3 and all(a > b for a, b in pairwise(sizes)), sizes
    assert stored(path, "big") == (None, 0, 0) and cluster.changing == 0


def test_a_crash_between_the_parts_of_a_delete_finishes_it_at_start(tmp_path: Path) -> None:
    cluster, clock = cluster_of(tmp_path, NODES)
    path = tmp_path / "c.db"
    complete(cluster.create_steps(big("big"), "admin", "req-1", clock(), site="-"))
    complete(cluster.create_steps(slice_doc("small", 3, distinct="none", cpu=0.01, memory="4Mi"), "admin", "req-2", clock(), site="-"))
    gen = cluster.delete_steps("big")
    next(gen)
    next(gen)  # some rows removed, not all; then the controller dies
    assert 0 < stored(path, "big")[1] < SLIVERS
    after = reopened(path, clock)
    assert set(after.slices) == {"small"} and len(after.slivers) == 3
    assert stored(path, "big") == (None, 0, 0)
    assert used_cpu(after) == pytest.approx(3 * 0.01)


def test_a_start_that_cannot_remove_an_unfinished_slice_does_not_load_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cluster, clock = cluster_of(tmp_path, NODES)
    path = tmp_path / "c.db"
    gen = cluster.create_steps(big("big"), "admin", "req-1", clock(), site="-")
    steps_until(gen, lambda: stored(path, "big")[1] == PART_ROWS)

    def refused(self: Store, name: str | None = None) -> list[str]:
        raise StoreError("the disk is full")

    monkeypatch.setattr(Store, "drop_unfinished", refused)
    after = reopened(path, clock)  # starts all the same, and serves what was made
    assert "big" not in after.slices and not after.slivers and used_cpu(after) == 0
    assert stored(path, "big") == (WRITING, PART_ROWS, PART_ROWS), "left for a later start"


def test_a_very_big_delete_looks_up_its_slivers_first_and_sees_a_move_made_meanwhile(tmp_path: Path) -> None:
    from controller import moves
    from controller.cluster import WALK_ALONE

    count = WALK_ALONE + 100
    cluster, clock = cluster_of(tmp_path, count + 1)
    complete(cluster.create_steps(slice_doc("huge", count, distinct="none", cpu=0.01, memory="4Mi"), "admin", "req-1", clock(), site="-"))
    holders = {cluster.slivers[s].node for s in cluster.slices["huge"].slivers}
    (spare,) = set(cluster.registry.nodes) - holders  # the one node without a sliver of it
    gen = cluster.delete_steps("huge")
    next(gen)
    assert "huge" in cluster.slices and cluster.changing == 1, "only looked up: nothing changed yet, other changes wait"
    moving = cluster.slivers[cluster.slices["huge"].slivers[0]]
    moves.begin_move(cluster, moving, spare, clock(), "drain")  # a placement that changed between the steps
    before = cluster.registry.nodes[spare].generation
    cluster.dirty_nodes.clear()
    next(gen)
    assert "huge" not in cluster.slices and moving.id not in cluster.registry.nodes[spare].slivers
    assert cluster.registry.nodes[spare].generation > before and spare in cluster.dirty_nodes, "the move's target is told the copy is gone too"
    complete(gen)
    assert cluster.changing == 0 and used_cpu(cluster) == pytest.approx(0, abs=1e-9)
