"""A controller's ``Cluster`` in-process over a real store, with simulated nodes registered:
for tests of its logic without sockets."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from controller.cluster import Cluster
from controller.registry import Registry
from controller.store import Store
from slices.catalogue import builtin_catalogue
from slices.model import NodeInfo
from slices.simcluster import sim_nodes
from tests.clock import Clock


def cluster_of(tmp_path: Path, nodes: int) -> tuple[Cluster, Clock]:
    """``nodes`` simulated nodes (busybox offered) registered with a new cluster, and its clock."""
    clock = Clock(1_000.0)
    cluster = Cluster(Store(str(tmp_path / "c.db"), new_cluster=True), Registry(period=1.0, rate=2000.0, misses=3), clock)
    register_sim_nodes(cluster, nodes, clock)
    return cluster, clock


def register_sim_nodes(cluster: Cluster, nodes: int, clock: Callable[[], float]) -> None:
    """``nodes`` simulated nodes (busybox offered) registered straight into ``cluster``, as
    their registrations would (each node's peer id is its name: nothing answers there)."""
    for raw in sim_nodes(builtin_catalogue(), nodes, "sim"):
        info = dataclasses.replace(NodeInfo.from_wire(raw), images=("busybox",))
        cluster.register(info, info.name.encode(), [], 0, clock())
