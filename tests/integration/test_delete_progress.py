"""``delete --wait`` counts the nodes a deleted slice still waits for as they apply, stop or go
away (``Cluster._done_deleting``), not by looking at every node of the slice each turn."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.common import slice_doc
from controller.steps import complete
from tests.inprocess import cluster_of

pytestmark = pytest.mark.timeout(60)


def test_a_deleted_slice_waits_for_each_up_node_until_it_applied_stopped_or_was_removed(tmp_path: Path) -> None:
    cluster, clock = cluster_of(tmp_path, 12)
    complete(cluster.create_steps(slice_doc("gone", 12, distinct="none", cpu=0.1, memory="16Mi"), "admin", "r1", clock(), site=None))
    recs = {r.name: r for r in cluster.registry}
    names = sorted(recs)
    cluster.registry.mark(recs[names[0]], "down")  # down before the delete: never waited for
    cluster.delete("gone")
    cluster.take_touched()
    assert cluster.progress("gone").state == "deleting" and cluster.progress("gone").placed == 11

    cluster.apply_report(recs[names[1]], recs[names[1]].generation - 1, [])  # an older generation: still holds it
    assert cluster.progress("gone").placed == 11 and not cluster.take_touched()
    for n in names[1:5]:
        cluster.apply_report(recs[n], recs[n].generation, [])
    assert cluster.take_touched() == {"gone"}
    assert cluster.progress("gone").placed == 7

    cluster.goodbye(recs[names[5]], "stopped by its operator", clock())  # a clean stop
    cluster.revoke_node(names[6], clock())  # a revoked key
    cluster.remove_node(recs[names[7]])
    assert cluster.progress("gone").placed == 4

    for n in names[8:]:
        cluster.apply_report(recs[n], recs[n].generation, [])
    done = cluster.progress("gone")
    assert done.state == "deleted" and done.settled and "gone" not in cluster.deleting
