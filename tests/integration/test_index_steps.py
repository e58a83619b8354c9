"""The placement index is rebuilt in steps (``Cluster.index_steps``) after registrations drop
it, so the first create after 10,000 nodes join does not hold the loop for the whole rebuild.
Nodes that change between its steps must still be seen as they are at its end."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Generator
from pathlib import Path

import numpy as np
import pytest

from benchmarks.common import slice_doc
from controller.cluster import VIEWS_CHUNK, Cluster
from controller.placement import NodeIndex
from controller.steps import complete
from slices.catalogue import builtin_catalogue
from slices.model import NodeInfo
from slices.simcluster import sim_nodes
from tests.inprocess import cluster_of

pytestmark = pytest.mark.timeout(120)

NODES = 2 * VIEWS_CHUNK + 300


def fresh(cluster: Cluster) -> NodeIndex:
    """The index built at once from the records as they are now."""
    return NodeIndex(cluster._view(rec) for rec in cluster.registry)


def assert_same(got: NodeIndex, want: NodeIndex) -> None:
    assert got.names == want.names and got.pos == want.pos and got.values == want.values
    for attr in ("up", "schedulable", "capacity", "usage", "cell", "unit", "inv_cap"):
        assert np.array_equal(getattr(got, attr), getattr(want, attr)), attr
    for attr in ("kinds", "images", "overhead", "ids"):
        x, y = getattr(got, attr), getattr(want, attr)
        assert x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x), attr


def test_an_index_rebuilt_in_steps_sees_the_nodes_that_changed_meanwhile(tmp_path: Path) -> None:
    cluster, clock = cluster_of(tmp_path, NODES)
    complete(cluster.create_steps(slice_doc("some", 50, distinct="none", cpu=0.5, memory="64Mi"), "admin", "r1", clock(), site="-"))
    cluster._index = None  # as a registration leaves it
    gen = cluster.index_steps()
    next(gen)  # the first VIEWS_CHUNK nodes viewed; the rest not yet
    first = [rec for rec in cluster.registry][:3]  # viewed already: each changes now
    cluster.charge(cluster.slivers[cluster.slices["some"].slivers[0]].spec, first[0].name, +1)
    cluster.registry.mark(first[1], "down")  # as the sweep marks it
    cluster._went_down(first[1], "test")
    cluster.set_admin(first[2], "cordoned")
    raw = next(n for n in sim_nodes(builtin_catalogue(), NODES + 1, "sim") if n["name"] not in cluster.registry.nodes)
    info = dataclasses.replace(NodeInfo.from_wire(raw), images=("busybox",))
    cluster.register(info, info.name.encode(), [], 0, clock())  # a node that joined meanwhile
    built = complete(gen)
    assert built is cluster.index() and len(built.names) == NODES + 1
    assert_same(built, fresh(cluster))


def test_a_create_places_on_an_index_rebuilt_in_steps(tmp_path: Path) -> None:
    cluster, clock = cluster_of(tmp_path, NODES)
    cluster._index = None
    steps = 0
    gen = cluster.create_steps(slice_doc("big", NODES, distinct="none", cpu=0.5, memory="64Mi"), "admin", "r1", clock(), site="-")
    with pytest.raises(StopIteration):
        while True:
            next(gen)
            steps += 1
    assert steps > NODES // VIEWS_CHUNK and len(cluster.slices["big"].slivers) == NODES
    assert_same(cluster.index(), fresh(cluster))


def built_with(cluster: Cluster, change: Callable[[int], None]) -> tuple[NodeIndex, int]:
    """The index rebuilt in steps, ``change(step)`` made between each two; and how many."""
    cluster._index = None  # as a node's registration with new facts leaves it
    steps: Generator[None, None, NodeIndex] = cluster.index_steps()
    n = 0
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value, n
        change(n)
        n += 1


def test_the_index_itself_is_built_in_steps_and_equals_one_built_at_once(tmp_path: Path) -> None:
    cluster, _ = cluster_of(tmp_path, 1200)
    index, steps = built_with(cluster, lambda _: None)
    assert steps >= 8, "views, then the index's parts, each a step of its own"
    assert cluster._index is index
    assert_same(index, fresh(cluster))
    views = [cluster._view(rec) for rec in cluster.registry]
    assert_same(complete(NodeIndex.built_steps(views)), NodeIndex(reversed(views)))


def test_nodes_changed_while_the_index_itself_is_built_are_in_it_as_they_are_now(tmp_path: Path) -> None:
    cluster, clock = cluster_of(tmp_path, 1200)
    recs = list(cluster.registry)
    for k in range(4):
        complete(cluster.create_steps(slice_doc(f"s{k}", 1, distinct="none", cpu=0.5, memory="64Mi"), "admin", f"r{k}", clock(), site="-"))

    def change(step: int) -> None:
        rec = recs[step * 37 % len(recs)]
        if step % 3 == 0:
            cluster.set_admin(rec, "cordoned")
        elif step % 3 == 1:
            cluster.revoke_node(rec.name, clock())  # down
        elif f"s{step // 3}" in cluster.slices and step < 9:  # a slice deleted meanwhile: its node's holdings change
            complete(cluster.delete_steps(f"s{step // 3}"))

    index, steps = built_with(cluster, change)
    assert steps >= 9 and cluster._index is index, "built by these steps, not by another request's"
    assert len(cluster.slices) == 1
    assert_same(index, fresh(cluster))
    assert not index.schedulable.all() and not index.up.all() and index.usage.any(), "the changes are in it"


def test_a_node_with_new_facts_while_the_index_itself_is_built_makes_it_built_again(tmp_path: Path) -> None:
    cluster, clock = cluster_of(tmp_path, 1200)
    rec = next(iter(cluster.registry))

    def change(step: int) -> None:
        if step == 5:  # past the views (one step at 1,200 nodes): while the index itself is built
            info = dataclasses.replace(rec.info, images=("busybox", "alpine"))
            cluster.register(info, info.name.encode(), [], 0, clock())

    index, steps = built_with(cluster, change)
    assert steps > 5 and cluster._index is index
    assert_same(index, fresh(cluster))
    assert "alpine" in index.images and index.images["alpine"].sum() == 1
