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


def test_deleted_slices_nobody_waits_for_are_forgotten_once_their_nodes_applied(tmp_path: Path) -> None:
    """Only a wait used to take a finished delete out of ``deleting``: without one (churn's
    clients, any script) each deleted slice stayed, and every agent report walked them all
    (37% of the controller's loop after 30 s of ``bench churn``)."""
    cluster, clock = cluster_of(tmp_path, 6)
    recs = {r.name: r for r in cluster.registry}
    for i in range(20):
        complete(cluster.create_steps(slice_doc(f"s{i}", 3, distinct="none", cpu=0.1, memory="16Mi"), "admin", f"r{i}", clock(), site=None))
        cluster.delete(f"s{i}")
        for rec in recs.values():
            cluster.apply_report(rec, rec.generation, [])
        assert f"s{i}" not in cluster.deleting and cluster.progress(f"s{i}").state == "deleted"
    assert cluster.deleting == {}
    complete(cluster.create_steps(slice_doc("unwatched", 3, distinct="none", cpu=0.1, memory="16Mi"), "admin", "r-u", clock(), site=None))
    for rec in recs.values():
        cluster.registry.mark(rec, "down")
    cluster.delete("unwatched")  # no up node holds it: nothing to wait for, nothing kept
    assert cluster.deleting == {} and cluster.progress("unwatched").state == "deleted"
