"""Which addresses each node is told (controller/peers.py), whole the first time and then as
changes, and how an agent keeps them (node_agent/slicenet.py ``PeerSets``); none for a slice
too big to distribute."""

from __future__ import annotations

import random
from types import SimpleNamespace
from typing import Any

from controller import peers
from node_agent.slicenet import PeerSets
from slices.codec import decode, encode
from slices.protocol import Desired, PeerChange


def cluster_with(sizes: dict[str, int], *, open_to: frozenset[str] = frozenset()) -> Any:
    c = SimpleNamespace(slices={}, slivers={}, peer_book={}, dirty_nodes={}, peers_due=set(), readdressed=set())
    for name, n in sizes.items():
        add_slice(c, name, n, open_to=name in open_to)
    return c


def add_slice(c: Any, name: str, n: int, *, open_to: bool = False) -> None:
    ids = [f"{name}-{i}" for i in range(n)]
    c.slices[name] = SimpleNamespace(slivers=ids, spec=SimpleNamespace(open_to_slices=open_to))
    for i, sid in enumerate(ids):
        c.slivers[sid] = SimpleNamespace(spec=SimpleNamespace(slice=name), node=f"n{i}", address=f"10.{len(name)}.{i // 250}.{i % 250 + 1}")


def node(*sids: str, name: str = "n0") -> Any:
    return SimpleNamespace(name=name, slivers=set(sids), peers_sent={}, last_push=0.0, period=1.0)


def told(c: Any, rec: Any, agent: PeerSets | None = None) -> PeerSets:
    """Push to ``rec`` as the server does, through the wire, into the agent's sets."""
    agent = agent if agent is not None else PeerSets()
    names, changes, _ = peers.changes_for(c, rec)
    back = decode(encode(Desired(generation=1, peer_sets=True, peer_slices=names, peer_changes=changes), id="g1.0", sender="controller")).msg
    assert isinstance(back, Desired)
    assert agent.apply(back.peer_slices, back.peer_changes) == []
    return agent


def addresses(c: Any, *names: str) -> dict[str, str]:
    return {sid: c.slivers[sid].address for name in names for sid in c.slices[name].slivers if c.slivers[sid].address}


def test_a_node_learns_its_slices_addresses_and_no_others() -> None:
    c = cluster_with({"web": 3, "db": 2})
    rec = node("web-0")
    agent = told(c, rec)
    assert {p.sliver: p.address for p in agent.peers()} == addresses(c, "web")
    names, changes, opened = peers.changes_for(c, rec)
    assert names == ["web"] and changes == [] and opened == [], "told already: nothing again"


def test_an_address_change_sends_that_change_only() -> None:
    c = cluster_with({"web": 300})
    recs = [node(f"web-{i}", name=f"n{i}") for i in range(3)]
    agents = [told(c, rec) for rec in recs]
    c.slivers["web-1"].address = "10.9.9.9"
    peers.address_changed(c, "web")
    c.slivers["web-2"].address = "10.9.9.8"
    peers.address_changed(c, "web")
    assert not c.dirty_nodes and c.readdressed == {"web"}, "marked at the push, once however many changed"
    peers.mark_readdressed(c)
    assert set(c.dirty_nodes) == {f"n{i}" for i in range(300)} and not c.readdressed
    for rec, agent in zip(recs, agents, strict=True):
        _, changes, _ = peers.changes_for(c, rec)
        assert [(len(ch.peers), ch.gone) for ch in changes] == [(2, [])] and changes[0].base > 0, "two entries, not 300"
        encode(Desired(generation=1, peer_changes=peers.on_wire(c, changes)), id="g", sender="c")
        agent.apply(["web"], changes)
        assert {p.sliver: p.address for p in agent.peers()} == addresses(c, "web")
    assert c.peer_book["web"].told[changes[0].base][1] is not None, "packed once, for all three"


def test_a_slice_without_addresses_is_told_nobody_until_one_has_one() -> None:
    c = cluster_with({"sim": 3})
    for sid in c.slices["sim"].slivers:
        c.slivers[sid].address = None  # sim slivers have none: no empty set to make, pack and send
    rec = node("sim-0")
    names, changes, _ = peers.changes_for(c, rec)
    assert names == ["sim"] and changes == [] and rec.peers_sent == {}
    agent = told(c, rec)
    assert agent.peers() == []
    c.slivers["sim-2"].address = "10.3.0.3"
    peers.address_changed(c, "sim")
    peers.mark_readdressed(c)
    assert "n0" in c.dirty_nodes
    told(c, rec, agent)
    assert {p.sliver: p.address for p in agent.peers()} == {"sim-2": "10.3.0.3"}
    c.slivers["sim-2"].address = None  # a node told an address is told it is gone
    peers.address_changed(c, "sim")
    _, changes, _ = peers.changes_for(c, rec)
    assert [ch.gone for ch in changes] == [["sim-2"]]
    agent.apply(["sim"], changes)
    assert agent.peers() == []


def test_each_change_is_made_and_packed_once_for_all_the_nodes_told_it() -> None:
    c = cluster_with({"web": 50})
    recs = [node(f"web-{i}", name=f"n{i}") for i in range(4)]
    first = [peers.changes_for(c, rec)[1][0] for rec in recs]
    assert all(ch is first[0] for ch in first) and first[0].base == 0, "one whole set for every new node"
    wired = [peers.on_wire(c, [ch]) for ch in first]
    assert all(w.items[0] is wired[0].items[0] for w in wired), "its bytes packed once"
    assert decode(encode(Desired(generation=1, peer_changes=wired[0]), id="g", sender="c")).msg.peer_changes == [first[0]]
    c.slivers["web-9"].address = "10.9.9.9"
    peers.address_changed(c, "web")
    again = [peers.changes_for(c, rec)[1][0] for rec in recs]
    assert all(ch is again[0] for ch in again) and again[0].base == first[0].version and len(again[0].peers) == 1
    assert peers.on_wire(c, [again[0]]).items[0] is peers.on_wire(c, [again[0]]).items[0]
    assert peers.changes_for(c, node("web-5", name="new"))[1][0].base == 0, "a new node still gets the whole set"


def test_changes_accumulate_for_a_node_not_told_meanwhile_and_removals_travel() -> None:
    c = cluster_with({"web": 10})
    rec, agent = node("web-0"), PeerSets()
    agent = told(c, rec, agent)
    for i in (1, 2, 3):
        c.slivers[f"web-{i}"].address = f"10.9.9.{i}"
        peers.address_changed(c, "web")
        peers.published(c, "web")  # another node was told: a version each time
    c.slices["web"].slivers.remove("web-4")
    c.slivers["web-5"].address = None
    peers.address_changed(c, "web")
    _, changes, _ = peers.changes_for(c, rec)
    assert sorted(p.sliver for p in changes[0].peers) == ["web-1", "web-2", "web-3"] and sorted(changes[0].gone) == ["web-4", "web-5"]
    agent.apply(["web"], changes)
    assert {p.sliver: p.address for p in agent.peers()} == addresses(c, "web")


def test_a_node_far_behind_or_new_or_stale_is_told_whole() -> None:
    c = cluster_with({"web": 4})
    rec = node("web-0")
    told(c, rec)
    for k in range(peers.LOG_SLACK + 10):  # more changes than the log keeps
        c.slivers["web-1"].address = f"10.8.{k // 250}.{k % 250 + 1}"
        peers.address_changed(c, "web")
        peers.published(c, "web")
    _, changes, _ = peers.changes_for(c, rec)
    assert changes[0].base == 0 and len(changes[0].peers) == 4
    fresh = PeerSets.of(PeerSets().peers())  # an agent just restarted: version 0
    late = PeerChange(slice="web", base=changes[0].version, version=changes[0].version + 1, peers=[])
    assert fresh.apply(["web"], [late]) == ["web"], "a change it cannot place: asked for whole"
    peers.resend(c, rec, ["web"], 10.0)
    assert "n0" in c.dirty_nodes and peers.changes_for(c, rec)[1][0].base == 0


def test_a_node_that_asks_again_and_again_is_sent_one_whole_set_a_period() -> None:
    c = cluster_with({"web": 40})
    rec = node("web-0")
    told(c, rec)
    c.registry = SimpleNamespace(get={"n0": rec}.get)
    rec.last_push = 100.0  # just pushed to
    for k in range(1000):  # a broken or hostile agent
        peers.resend(c, rec, ["web"], 100.0 + k / 10_000)
    assert not c.dirty_nodes and c.peers_due == {"n0"}, "within its period: nothing pushed yet"
    peers.push_due(c, 100.5)
    assert not c.dirty_nodes, "still within the period of its last push"
    peers.push_due(c, 101.0)
    assert list(c.dirty_nodes) == ["n0"] and not c.peers_due
    assert peers.changes_for(c, rec)[1][0].base == 0, "sent whole"
    c.dirty_nodes.clear()
    rec.last_push = 101.0  # the server pushed it
    peers.resend(c, rec, ["web"], 102.5)  # a period later: at once
    assert "n0" in c.dirty_nodes
    c.dirty_nodes.clear()
    rec.last_push = 102.5
    peers.resend(c, rec, ["web"], 102.6)
    c.registry = SimpleNamespace(get={}.get)  # its node is removed meanwhile
    peers.push_due(c, 104.0)
    assert not c.dirty_nodes and not c.peers_due


def test_a_slice_made_again_under_its_name_is_sent_whole() -> None:
    c = cluster_with({"web": 3})
    rec = node("web-0")
    agent = told(c, rec)
    peers.forget(c, "web")
    del c.slices["web"]
    add_slice(c, "web", 2)
    for sid in c.slices["web"].slivers:
        c.slivers[sid].address = "10.7.7." + sid[-1]
    _, changes, _ = peers.changes_for(c, rec)
    assert changes[0].base == 0, "versions are never reused"
    agent.apply(["web"], changes)
    assert {p.sliver: p.address for p in agent.peers()} == {"web-0": "10.7.7.0", "web-1": "10.7.7.1"}


def test_a_node_drops_slices_it_no_longer_holds() -> None:
    c = cluster_with({"web": 2, "db": 2})
    rec = node("web-0", "db-0")
    agent = told(c, rec)
    rec.slivers.discard("db-0")
    names, changes, _ = peers.changes_for(c, rec)
    assert names == ["web"] and changes == [] and set(rec.peers_sent) == {"web"}
    agent.apply(names, changes)
    assert {p.slice for p in agent.peers()} == {"web"}


def test_random_changes_converge() -> None:
    rng = random.Random(7)
    c = cluster_with({"web": 50})
    recs = [node("web-0", name="a"), node("web-1", name="b")]
    agents = [told(c, r) for r in recs]
    for _ in range(300):
        sid = f"web-{rng.randrange(50)}"
        c.slivers[sid].address = rng.choice([None, f"10.6.{rng.randrange(250)}.{rng.randrange(1, 250)}"])
        peers.address_changed(c, "web")
        who = rng.randrange(2)
        _, changes, _ = peers.changes_for(c, recs[who])
        assert agents[who].apply(["web"], changes) == []
        assert {p.sliver: p.address for p in agents[who].peers()} == addresses(c, "web")


def test_a_slice_too_big_to_distribute_tells_nobody() -> None:
    big = peers.MAX_PEERS + 1
    c = cluster_with({"everywhere": big, "small": 2})
    names, changes, _ = peers.changes_for(c, node("everywhere-0", "small-0"))
    assert names == ["small"] and {ch.slice for ch in changes} == {"small"}
    peers.address_changed(c, "everywhere")
    peers.mark_readdressed(c)
    assert not c.dirty_nodes, f"{big} nodes each told {big} addresses: past MAX_PEERS, not distributed"


def test_open_slices_learn_each_other() -> None:
    c = cluster_with({"a": 2, "b": 2, "closed": 2}, open_to=frozenset({"a", "b"}))
    names, changes, opened = peers.changes_for(c, node("a-0"))
    assert names == ["a", "b"] and {ch.slice for ch in changes} == {"a", "b"} and opened == ["a", "b"]
    assert peers.changes_for(c, node("closed-0"))[0] == ["closed"]


def test_a_node_of_many_big_slices_is_told_them_over_several_sets() -> None:
    c = cluster_with({"a": 300, "b": 300, "c": 300})
    rec = node("a-0", "b-0", "c-0")
    whole = len(peers.on_wire(c, peers.changes_for(c, node("a-1"))[1]).items[0])
    c.dirty_nodes.clear()
    agent = PeerSets()
    names, changes, _ = peers.changes_for(c, rec, max_bytes=whole + 10)
    assert names == ["a", "b", "c"] and [ch.slice for ch in changes] == ["a"] and list(c.dirty_nodes) == ["n0"], "one a set, the next at once"
    assert agent.apply(names, changes) == []
    c.dirty_nodes.clear()
    names, changes, _ = peers.changes_for(c, rec, max_bytes=whole + 10)
    assert [ch.slice for ch in changes] == ["b"] and list(c.dirty_nodes) == ["n0"]
    assert agent.apply(names, changes) == []
    c.dirty_nodes.clear()
    names, changes, _ = peers.changes_for(c, rec, max_bytes=1)
    assert [ch.slice for ch in changes] == ["c"] and not c.dirty_nodes, "one change always goes, however big"
    assert agent.apply(names, changes) == []
    assert {p.sliver: p.address for p in agent.peers()} == addresses(c, "a", "b", "c")
    assert peers.changes_for(c, rec)[1] == [] and not c.dirty_nodes


def test_a_slice_keeps_its_whole_set_and_its_latest_changes_made() -> None:
    c = cluster_with({"web": 40})
    recs = [node("web-0", name=f"n{i}") for i in range(peers.MAX_TOLD + 3)]
    for rec in recs:  # every node told the whole set, then each left at its own version
        peers.changes_for(c, rec)
    for i, rec in enumerate(recs):
        c.slivers[f"web-{i % 40}"].address = f"10.9.{i}.9"
        peers.address_changed(c, "web")
        peers.published(c, "web")
        rec.peers_sent["web"] = c.peer_book["web"].version
    c.slivers["web-1"].address = "10.9.250.1"
    peers.address_changed(c, "web")
    pub = peers.published(c, "web")
    assert pub is not None
    made = [peers.changes_for(c, rec)[1][0] for rec in recs]
    assert len(pub.told) == peers.MAX_TOLD + 1 and 0 not in pub.told, "bounded: the latest MAX_TOLD + 1 made"
    latest = made[-1]
    assert pub.packed(latest) is pub.packed(latest), "the latest change packed once, however often it is sent"
    assert peers.changes_for(c, node("web-0", name="new"))[1][0].base == 0
    assert 0 in pub.told and len(pub.told) == peers.MAX_TOLD + 1, "the whole set joins; the oldest change goes"
