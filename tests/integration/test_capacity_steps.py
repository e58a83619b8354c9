"""A slice's capacity is held and freed in steps (controller/cluster.py ``_charge_steps``), and
every node's account comes back to what it was: a big create and delete, a sliver that exited
(and freed its share then) deleted with its slice, and reports arriving between the steps."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.common import slice_doc
from controller.cluster import CHARGE_CHUNK
from controller.steps import complete
from slices.model import Resources
from tests.inprocess import cluster_of

pytestmark = pytest.mark.timeout(120)


def used(cluster: object) -> dict[str, Resources]:
    return {name: rec.used for name, rec in cluster.registry.nodes.items()}  # type: ignore[attr-defined]


def index_used(cluster: object) -> dict[str, tuple[float, float]]:
    index = cluster.index()  # type: ignore[attr-defined]
    return {name: (round(float(index.usage[0, i]), 6), float(index.usage[1, i])) for name, i in index.pos.items()}


def test_an_exited_sliver_is_not_freed_twice_when_its_slice_goes(tmp_path: Path) -> None:
    cluster, clock = cluster_of(tmp_path, 4)
    cluster.flush()
    complete(cluster.create_steps(slice_doc("other", 4, distinct="none", cpu=0.25, memory="64Mi"), "admin", "r-other", clock(), site="-"))
    before = used(cluster)
    complete(cluster.create_steps(slice_doc("brief", 4, distinct="none", cpu=0.5, memory="128Mi"), "admin", "r-brief", clock(), site="-"))
    one = cluster.slices["brief"].slivers[0]
    node = cluster.slivers[one].node
    cluster.set_sliver(one, "exited", "exit code 0")  # not restarted: its share is freed now
    assert cluster.registry.nodes[node].used == before[node]
    complete(cluster.delete_steps("brief"))
    assert used(cluster) == before  # the exited one was not freed again (its node would be under)


def test_a_big_slice_is_charged_and_freed_in_steps_and_every_account_comes_back(tmp_path: Path) -> None:
    n = 2 * CHARGE_CHUNK + 500
    cluster, clock = cluster_of(tmp_path, n)
    cluster.flush()
    before, index_before = used(cluster), index_used(cluster)
    steps = cluster.create_steps(slice_doc("big", n, distinct="none", cpu=0.01, memory="4Mi"), "admin", "r-big", clock(), site="-")
    complete(steps)
    sl = cluster.slices["big"]
    assert len(sl.slivers) == n and cluster.changing == 0
    assert all(u.memory == before[name].memory + 4 * 2**20 for name, u in used(cluster).items())
    exited = sl.slivers[:3]
    gone = cluster.delete_steps("big")
    next(gone)  # the first step: its slivers looked up (a step of their own at this size)
    assert "big" in cluster.slices and cluster.changing == 1  # other changes wait already
    next(gone)  # the next: the slice is gone, its capacity is being freed
    assert "big" not in cluster.slices and cluster.changing == 1  # other changes wait meanwhile
    assert all(sid not in cluster.slivers for sid in exited)
    freed_steps = 1
    try:
        while True:
            next(gone)
            freed_steps += 1
    except StopIteration:
        pass
    assert freed_steps >= 3  # 5,500 nodes at 2,500 a step
    assert cluster.changing == 0
    assert used(cluster) == before
    assert index_used(cluster) == index_before
