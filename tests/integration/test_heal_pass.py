"""Healing looks at every sliver over ``FULL_PASS_EVERY`` sweeps (a share each sweep), and at
the slivers that may have to move in every sweep, over a real store."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.common import slice_doc
from controller import healing
from controller.steps import complete
from tests.inprocess import cluster_of

pytestmark = pytest.mark.timeout(60)


def test_every_sliver_is_looked_at_once_per_pass_and_the_likely_movers_every_sweep(tmp_path: Path) -> None:
    cluster, clock = cluster_of(tmp_path, 40)
    complete(cluster.create_steps(slice_doc("wide", 35, distinct="none", cpu=0.01, memory="4Mi"), "admin", "r-wide", clock(), site="-"))
    cluster.flush()
    assert len(cluster.slivers) == 35
    every = [[sl.id for sl in healing.candidates(cluster, part=k)] for k in range(healing.FULL_PASS_EVERY)]
    assert sorted(sid for ids in every for sid in ids) == sorted(cluster.slivers), "one pass: each sliver once"
    assert max(map(len, every)) <= -(-35 // healing.FULL_PASS_EVERY), "a sweep's share, not all of them"
    draining = cluster.registry.nodes[cluster.slivers[every[3][0]].node]
    cluster.set_admin(draining, "draining")
    for k in range(healing.FULL_PASS_EVERY):
        ids = [sl.id for sl in healing.candidates(cluster, part=k)]
        assert draining.slivers <= set(ids), "a draining node's slivers are looked at in every sweep"
        assert len(ids) == len(set(ids)), "and once"
    assert healing.heal(cluster, clock(), 3.0, part=0) == len(draining.slivers), "they move make-before-break"
