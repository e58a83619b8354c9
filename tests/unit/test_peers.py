"""Which addresses each node is told (controller/peers.py): a slice's own, cached, and none for
a slice too big to distribute (its addresses would cost N^2 entries per change)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from controller import peers


def cluster_with(sizes: dict[str, int], *, open_to: frozenset[str] = frozenset()) -> Any:
    slices, slivers = {}, {}
    for name, n in sizes.items():
        ids = [f"{name}-{i}" for i in range(n)]
        spec = SimpleNamespace(open_to_slices=name in open_to)
        slices[name] = SimpleNamespace(slivers=ids, spec=spec)
        for i, sid in enumerate(ids):
            slivers[sid] = SimpleNamespace(spec=SimpleNamespace(slice=name), node=f"n{i}", address=f"10.{len(name)}.{i // 250}.{i % 250 + 1}")
    return SimpleNamespace(slices=slices, slivers=slivers, peer_cache={}, dirty_nodes={})


def node(*sids: str) -> Any:
    return SimpleNamespace(slivers=set(sids))


def test_a_node_learns_its_slices_addresses_and_no_others() -> None:
    c = cluster_with({"web": 3, "db": 2})
    known, opened = peers.peers_for(c, node("web-0"))
    assert sorted(p.sliver for p in known) == ["web-0", "web-1", "web-2"] and opened == []
    assert c.peer_cache["web"] is peers.slice_peers(c, "web"), "kept until an address changes"


def test_an_address_change_refreshes_the_slice_and_tells_its_nodes() -> None:
    c = cluster_with({"web": 3})
    peers.peers_for(c, node("web-0"))
    c.slivers["web-1"].address = "10.9.9.9"
    peers.address_changed(c, "web")
    assert "web" not in c.peer_cache and set(c.dirty_nodes) == {"n0", "n1", "n2"}
    assert "10.9.9.9" in {p.address for p in peers.peers_for(c, node("web-0"))[0]}


def test_a_slice_too_big_to_distribute_tells_nobody() -> None:
    big = peers.MAX_PEERS + 1
    c = cluster_with({"everywhere": big, "small": 2})
    known, _ = peers.peers_for(c, node("everywhere-0", "small-0"))
    assert {p.slice for p in known} == {"small"}
    peers.address_changed(c, "everywhere")
    assert not c.dirty_nodes, f"{big} nodes re-sent {big} addresses each on every change was the stall"


def test_open_slices_learn_each_other() -> None:
    c = cluster_with({"a": 2, "b": 2, "closed": 2}, open_to=frozenset({"a", "b"}))
    known, opened = peers.peers_for(c, node("a-0"))
    assert {p.slice for p in known} == {"a", "b"} and opened == ["a", "b"]
    assert {p.slice for p in peers.peers_for(c, node("closed-0"))[0]} == {"closed"}
