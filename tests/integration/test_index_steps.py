"""The placement index is rebuilt in steps (``Cluster.index_steps``) after registrations drop
it, so the first create after 10,000 nodes join does not hold the loop for the whole rebuild.
Nodes that change between its steps must still be seen as they are at its end."""

from __future__ import annotations

import dataclasses
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
    assert got.names == want.names
    for attr in ("up", "schedulable", "capacity", "usage", "cell"):
        assert np.array_equal(getattr(got, attr), getattr(want, attr)), attr


def test_an_index_rebuilt_in_steps_sees_the_nodes_that_changed_meanwhile(tmp_path: Path) -> None:
    cluster, clock = cluster_of(tmp_path, NODES)
    complete(cluster.create_steps(slice_doc("some", 50, distinct="none", cpu=0.5, memory="64Mi"), "admin", "r1", clock(), site="-"))
    cluster._index = None  # as a registration leaves it
    gen = cluster.index_steps()
    next(gen)  # the first VIEWS_CHUNK nodes viewed; the rest not yet
    first = [rec for rec in cluster.registry][:3]  # viewed already: each changes now
    cluster.charge(cluster.slivers[cluster.slices["some"].slivers[0]].spec, first[0].name, +1)
    first[1].state = "down"  # as the sweep marks it
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
