"""Desired-set generations in the store: only the largest ever given is kept (one row, whatever
a change's size), a file written before counts its per-node generations, and a controller
started again gives every node a generation above any it gave before."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.common import slice_doc
from controller.cluster import Cluster
from controller.registry import Registry
from controller.steps import complete
from controller.store import Store
from tests.clock import Clock
from tests.inprocess import cluster_of

pytestmark = pytest.mark.timeout(30)

LOCATION = {"city": "Turin", "country": "IT", "region": "Europe", "lat": 45.07, "lon": 7.69}


def _info(name: str) -> dict[str, object]:
    return {"name": name, "site": "trn01", "location": LOCATION}


def test_the_largest_generation_given_is_kept_and_survives_a_reopen(tmp_path: Path) -> None:
    store = Store(tmp_path / "c.db")
    assert store.generation_floor() == 0
    with store.transaction():
        store.upsert_node(_info("n1"), "up", 0, 0.0)
        store.gave_generations([5, 3])
    with store.transaction():
        store.gave_generations([4])  # never lowered
        store.gave_generations([])
    assert store.generation_floor() == 5
    store.close()
    again = Store(tmp_path / "c.db")
    assert again.generation_floor() == 5
    assert again.db.execute("SELECT count(*) FROM meta WHERE key='generations'").fetchone()[0] == 1


def test_a_generation_given_in_a_transaction_that_fails_is_not_kept(tmp_path: Path) -> None:
    store = Store(tmp_path / "c.db")
    with store.transaction():
        store.gave_generations([2])
    with pytest.raises(RuntimeError), store.transaction():
        store.gave_generations([9])
        raise RuntimeError("the change failed after it")
    assert store.generation_floor() == 2


def test_a_file_from_before_counts_its_per_node_generations(tmp_path: Path) -> None:
    store = Store(tmp_path / "c.db")
    with store.transaction():
        store.upsert_node(_info("n1"), "up", 7, 0.0)  # as registrations wrote it
        store.upsert_node(_info("n2"), "up", 1, 0.0)
        store.db.execute("INSERT INTO generations VALUES ('n2', 11)")  # the per-node table an older controller wrote
    store.close()
    assert Store(tmp_path / "c.db").generation_floor() == 11


def test_a_restarted_controller_gives_every_node_a_generation_above_any_given(tmp_path: Path) -> None:
    cluster, clock = cluster_of(tmp_path, 6)
    complete(cluster.create_steps(slice_doc("a", 3, distinct="none", cpu=0.1, memory="16Mi"), "admin", "r-a", clock(), site="-"))
    complete(cluster.create_steps(slice_doc("b", 6, distinct="none", cpu=0.1, memory="16Mi"), "admin", "r-b", clock(), site="-"))
    cluster.delete("a")
    given = {name: rec.generation for name, rec in cluster.registry.nodes.items()}
    assert max(given.values()) >= 3 and len(set(given.values())) > 1  # each node's own count
    cluster.flush()
    cluster.store.close()
    again = Cluster(Store(str(tmp_path / "c.db")), Registry(period=1.0, rate=2000.0, misses=3), Clock(2_000.0))
    after = {name: rec.generation for name, rec in again.registry.nodes.items()}
    assert after.keys() == given.keys()
    assert set(after.values()) == {max(given.values()) + 1}
    assert sorted(again.slices) == ["b"] and all(len(again.registry.nodes[n].slivers) == 1 for n in after)


def test_a_node_removed_and_back_starts_above_every_generation_given(tmp_path: Path) -> None:
    cluster, clock = cluster_of(tmp_path, 3)
    for i in range(3):
        complete(cluster.create_steps(slice_doc(f"s{i}", 3, distinct="none", cpu=0.1, memory="16Mi"), "admin", f"r{i}", clock(), site="-"))
        cluster.delete(f"s{i}")
    rec = next(iter(cluster.registry))
    held = rec.generation  # what its agent last applied, and still holds
    assert held >= 6
    info = rec.info
    cluster.remove_node(rec)
    back = cluster.register(info, b"again", [], held, clock())  # its agent registers again
    assert back.generation > held  # its next set is not taken for an old push overtaken
    assert back.generation == cluster.generations_given + 1
