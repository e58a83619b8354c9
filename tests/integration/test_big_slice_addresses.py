"""A slice of more slivers than were once distributed (2,000) has its addresses told to every
node of it, by the controller's own ``Cluster`` over a real store: each address report marks
the slice once, its nodes are marked at the push, and the whole set is made and packed once
for all of them (controller/peers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.common import slice_doc
from controller import peers
from controller.steps import complete
from node_agent.slicenet import PeerSets
from slices.codec import decode, encode
from slices.model import SliverStatus
from slices.protocol import Desired
from tests.inprocess import cluster_of

pytestmark = pytest.mark.timeout(120)

N = 2100


def address(i: int) -> str:
    return f"10.{i // 250}.{i % 250}.2"


def test_a_slice_of_2100_slivers_tells_every_node_every_address(tmp_path: Path) -> None:
    cluster, clock = cluster_of(tmp_path, N)
    complete(cluster.create_steps(slice_doc("big", N, distinct="none", cpu=0.01, memory="4Mi"), "admin", "r1", clock(), site=None))
    cluster.flush()
    assert peers.distributed(cluster, "big")
    recs = {r.name: r for r in cluster.registry}
    ids = sorted(cluster.slices["big"].slivers)
    where = {sid: cluster.slivers[sid].node for sid in ids}
    want = {sid: address(i) for i, sid in enumerate(ids)}
    cluster.dirty_nodes.clear()
    for rec in recs.values():  # every node reports its slivers running, with addresses
        mine = [sid for sid in rec.slivers if sid in want]
        cluster.apply_report(rec, rec.generation, [SliverStatus(id=sid, state="running", address=want[sid]) for sid in mine])
    assert cluster.readdressed == {"big"}, "marked once, not once per address"
    peers.mark_readdressed(cluster)
    holders = {where[sid] for sid in ids}
    assert holders <= set(cluster.dirty_nodes) and not cluster.readdressed

    told = [peers.changes_for(cluster, recs[name])[1] for name in sorted(holders)]
    assert all(len(ch) == 1 and ch[0] is told[0][0] for ch in told), "one whole set, made once for every node"
    whole = peers.on_wire(cluster, told[0]).items[0]
    assert all(peers.on_wire(cluster, ch).items[0] is whole for ch in told[1:50]), "and packed once"
    for name in sorted(holders)[:3]:  # through the wire into an agent's sets
        agent = PeerSets()
        back = decode(encode(Desired(generation=1, peer_sets=True, peer_slices=["big"], peer_changes=peers.on_wire(cluster, told[0])), id="g", sender="c"), max_bytes=16 << 20).msg
        assert isinstance(back, Desired) and agent.apply(back.peer_slices, back.peer_changes) == []
        assert {p.sliver: p.address for p in agent.peers()} == want, name

    moved = ids[7]  # one readdressed: every node told that one entry
    cluster.apply_report(recs[where[moved]], recs[where[moved]].generation, [SliverStatus(id=moved, state="running", address="10.250.0.9")])
    peers.mark_readdressed(cluster)
    again = [peers.changes_for(cluster, recs[name])[1] for name in sorted(holders)]
    assert all(ch[0] is again[0][0] for ch in again) and again[0][0].base == told[0][0].version and [(p.sliver, p.address) for p in again[0][0].peers] == [(moved, "10.250.0.9")]


def test_a_slice_too_big_to_distribute_says_so_in_its_timeline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """(A slice has at most one sliver a node, so past 10,000 slivers means past 10,000 nodes:
    the bound is lowered here to 50, on 60 nodes.)"""
    monkeypatch.setattr(peers, "MAX_PEERS", 50)
    cluster, clock = cluster_of(tmp_path, 60)
    n = peers.MAX_PEERS + 1
    complete(cluster.create_steps(slice_doc("huge", n, distinct="none", cpu=0.001, memory="4Mi"), "admin", "r1", clock(), site=None))
    complete(cluster.create_steps(slice_doc("small", 3, distinct="none", cpu=0.001, memory="4Mi"), "admin", "r2", clock(), site=None))
    cluster.flush()
    assert not peers.distributed(cluster, "huge") and peers.distributed(cluster, "small")
    created = {name: [detail for _, _, _, kind, detail in cluster.store.events(name, 10) if kind == "created"] for name in ("huge", "small")}
    assert created["huge"] == [f"{n} slivers placed on 51 nodes; its slivers are not told each other's addresses (over 50 slivers: docs/networking.md)"]
    assert created["small"] == ["3 slivers placed on 3 nodes"]
