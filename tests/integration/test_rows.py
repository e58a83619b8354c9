"""The rows of ``nodes`` and ``show`` packed from kept parts (``controller/rows.py``) are the
same maps their records pack to, and the kept parts follow a node that registers again."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import msgpack
import pytest

from benchmarks.common import slice_doc
from controller.api.slices import slice_view_steps
from controller.rows import (
    FACTS,
    NODE_COLUMNS,
    NODE_STATE,
    PLACE,
    SLIVER,
    SLIVER_COLUMNS,
    TOP,
    TOP_COLUMNS,
    entries,
    fact_fields,
    joined,
    node_row,
    node_state_fields,
    node_state_row,
    node_state_values,
    node_view,
    place_fields,
    prepared,
    sliver_fields,
    sliver_row,
    sliver_state_fields,
    sliver_state_row,
    sliver_view,
    top_fields,
    top_row,
    values,
)
from controller.steps import complete
from slices import codec
from slices.catalogue import builtin_catalogue
from slices.codec import Packed
from slices.model import Location, NodeInfo, Resources, Usage
from slices.protocol import Event, ListNodes, ListSlivers, NodeList, NodeView, Ok, ShowSlice, SliceView, SliverList, SliverRow
from slices.protocol.base import result_of
from slices.simcluster import sim_nodes
from slices.wire import packable
from tests.inprocess import cluster_of

pytestmark = pytest.mark.timeout(60)


def packed(record: object) -> object:
    """``record`` as a decoder sees it."""
    return msgpack.unpackb(msgpack.packb(record, use_bin_type=True, default=packable))


def test_entries_join_under_one_header_whatever_their_count() -> None:
    for n in (0, 1, 15, 16, 300, 70_000):  # fixmap, map16 and map32 headers
        fields = {f"k{i}": i for i in range(n)}
        more = {"x": [1, 2], "y": None}
        assert msgpack.unpackb(joined(n + 2, entries(fields), entries(more)), strict_map_key=False) == {**fields, **more}
    assert tuple(place_fields(a_node())) == PLACE and tuple(fact_fields(a_node())) == FACTS  # a row's values follow these names


def a_node() -> NodeInfo:
    return NodeInfo.from_wire(next(iter(sim_nodes(builtin_catalogue(), 1, "sim"))))


def test_a_node_row_is_its_view_packed_and_follows_every_change(tmp_path: Path) -> None:
    cluster, clock = cluster_of(tmp_path, 40)
    complete(cluster.create_steps(slice_doc("some", 30, distinct="none", cpu=0.5, memory="64Mi"), "admin", "r1", clock(), site="-"))
    for i, rec in enumerate(cluster.registry):
        if i % 3 == 0:
            rec.usage = Usage(cpu_cores=0.25, memory=123 * 2**20)
        if i % 5 == 0:
            cluster.set_admin(rec, "cordoned")
        assert msgpack.unpackb(node_row(cluster, rec)) == packed(node_view(cluster, rec)), rec.name
    rec = next(iter(cluster.registry))
    kept = node_row(cluster, rec)
    assert node_row(cluster, rec) is kept  # nothing changed: the row kept is the row
    for change in ({"last_seen": rec.last_seen - 4.0}, {"usage": Usage(cpu_cores=1.5)}, {"state": "down"}, {"period": 7.5}):
        for attr, value in change.items():
            setattr(rec, attr, value)
        row = msgpack.unpackb(node_row(cluster, rec))
        assert row == packed(node_view(cluster, rec)) and row[next(iter(change)).replace("period", "heartbeat_period")] == packed(next(iter(change.values()))), change
    cluster.charge(cluster.slivers[cluster.slices["some"].slivers[0]].spec, rec.name, +1)  # its allocation grows
    assert msgpack.unpackb(node_row(cluster, rec)) == packed(node_view(cluster, rec))
    cluster.registry.mark(rec, "up")
    moved = dataclasses.replace(
        rec.info,
        location=Location(lat=-33.9, lon=151.2, city="Sydney", country="AU", region="oceania"),
        capacity=Resources(cpu=7.0, memory=2**33, disk=2**34),
        labels={"new": "yes"},
    )
    cluster.register(moved, rec.peer or b"x", [], 0, clock())  # registers again with new facts
    rec = cluster.registry.nodes[moved.name]
    row = msgpack.unpackb(node_row(cluster, rec))
    assert row == packed(node_view(cluster, rec))
    assert (row["city"], row["capacity"]["cpu"], row["labels"]) == ("Sydney", 7.0, {"new": "yes"})


def test_a_show_packed_from_parts_decodes_to_the_view_built_from_records(tmp_path: Path) -> None:
    cluster, clock = cluster_of(tmp_path, 60)
    doc = slice_doc("far", 12, locations=[{"near": {"lat": 40.35, "lon": -74.66}, "within_km": 20_000, "count": 12}], distinct="none", cpu=0.2, memory="32Mi")
    complete(cluster.create_steps(doc, "admin", "r1", clock(), site=None))
    sl = cluster.slices["far"]
    first = cluster.slivers[sl.slivers[0]]
    first.state, first.reason, first.address, first.restarts = "failed", "exit 3", "10.1.2.3", 2
    first.usage = Usage(cpu_seconds=3.5, memory=2**20, pids=4)
    history = [Event(ts=clock(), event="placed", sliver=first.id, node=first.node, detail="first")]
    assert msgpack.unpackb(sliver_row(cluster, first, 12.34, history)) == packed(sliver_view(cluster, first, 12.34, history))

    records = complete(slice_view_steps(cluster, sl))
    frame = codec.encode(Ok(result=complete(slice_view_steps(cluster, sl, pack=True))), id="x", sender="c")
    got = result_of(ShowSlice(name="far"), codec.decode(frame).msg)
    assert isinstance(got, SliceView) and len(got.slivers) == 12
    assert got == records
    assert all(v.km_to_point is not None for v in got.slivers)


def test_a_show_row_is_kept_while_it_shows_the_same_and_follows_every_change(tmp_path: Path) -> None:
    cluster, clock = cluster_of(tmp_path, 20)
    complete(cluster.create_steps(slice_doc("kept", 4, distinct="none", cpu=0.2, memory="32Mi"), "admin", "r1", clock(), site=None))
    s = cluster.slivers[cluster.slices["kept"].slivers[0]]
    kept = sliver_row(cluster, s, 100.0)
    assert sliver_row(cluster, s, 100.0) is kept  # nothing changed: the row kept is the row
    history = [Event(ts=clock(), event="moved", sliver=s.id, node=s.node, detail="from x")]
    changes: list[tuple[str, object]] = [
        ("state", "failed"), ("reason", "exit 1"), ("usage", Usage(cpu_seconds=2.0, memory=2**21, pids=3)), ("restarts", 3),
        ("moves", 1), ("address", "10.9.8.7"), ("code_note", "pulled"),
    ]  # fmt: skip
    for attr, value in changes:
        setattr(s, attr, value)
        row = sliver_row(cluster, s, 100.0)
        assert msgpack.unpackb(row) == packed(sliver_view(cluster, s, 100.0)), attr
    assert msgpack.unpackb(sliver_row(cluster, s, 250.0)) == packed(sliver_view(cluster, s, 250.0))  # a new nearest peer
    assert msgpack.unpackb(sliver_row(cluster, s, 250.0, history)) == packed(sliver_view(cluster, s, 250.0, history))
    rec = cluster.registry.nodes[s.node]
    moved = dataclasses.replace(rec.info, location=Location(lat=-33.9, lon=151.2, city="Sydney", country="AU", region="oceania"))
    cluster.register(moved, rec.peer or b"x", [], 0, clock())  # its node registers again, elsewhere
    row = msgpack.unpackb(sliver_row(cluster, s, 250.0, history))
    assert row == packed(sliver_view(cluster, s, 250.0, history)) and row["city"] == "Sydney"
    other = next(r for r in cluster.registry if r.name != s.node and r.info.location.city != "Sydney")
    s.node = other.name  # moved (moves.py): its kept part is its new node's
    row = msgpack.unpackb(sliver_row(cluster, s, 250.0, history))
    assert row == packed(sliver_view(cluster, s, 250.0, history)) and (row["node"], row["city"]) == (other.name, other.info.location.city)


def test_a_top_row_packs_as_the_sliver_row_record(tmp_path: Path) -> None:
    cluster, clock = cluster_of(tmp_path, 10)
    complete(cluster.create_steps(slice_doc("some", 5, distinct="none", cpu=0.5, memory="64Mi"), "admin", "r1", clock(), site=None))
    s = cluster.slivers[cluster.slices["some"].slivers[0]]
    s.usage, s.address = Usage(cpu_cores=0.5, memory=7), "10.9.8.7"
    assert packed(top_fields(s)) == packed(SliverRow(**top_fields(s)))
    assert set(top_fields(s)) == {f.name for f in dataclasses.fields(SliverRow)} and tuple(top_fields(s)) == TOP
    rows = Packed()
    rows.append(top_row(s))
    frame = codec.encode(Ok(result=SliverList(slivers=rows, columns=TOP_COLUMNS)), id="t", sender="c")  # type: ignore[arg-type]
    assert result_of(ListSlivers(rows="arrays"), codec.decode(frame).msg) == SliverList(slivers=[SliverRow(**top_fields(s))])


def test_rows_as_arrays_decode_to_the_records_their_maps_decode_to(tmp_path: Path) -> None:
    cluster, clock = cluster_of(tmp_path, 30)
    complete(cluster.create_steps(slice_doc("some", 20, distinct="none", cpu=0.5, memory="64Mi"), "admin", "r1", clock(), site=None))
    for i, rec in enumerate(cluster.registry):
        if i % 3 == 0:
            rec.usage = Usage(cpu_cores=0.25, memory=123 * 2**20)
    recs = list(cluster.registry)
    assert tuple(node_state_fields(cluster, recs[0])) == NODE_STATE
    as_maps, as_rows = Packed(), Packed()
    for rec in recs:
        as_maps.append(node_row(cluster, rec))
        as_rows.append(node_row(cluster, rec, arrays=True))
        assert isinstance(msgpack.unpackb(node_row(cluster, rec, arrays=True)), list)  # the kept row follows the form asked
    want = result_of(ListNodes(), codec.decode(codec.encode(Ok(result=NodeList(nodes=as_maps, total=len(recs))), id="m", sender="c")).msg)  # type: ignore[arg-type]
    frame = codec.encode(Ok(result=NodeList(nodes=as_rows, total=len(recs), columns=NODE_COLUMNS)), id="a", sender="c")  # type: ignore[arg-type]
    got = result_of(ListNodes(rows="arrays"), codec.decode(frame).msg)
    assert got == want and got.nodes == [node_view(cluster, rec) for rec in recs] and got.columns is None
    assert all(isinstance(v, NodeView) for v in got.nodes)

    sl = cluster.slices["some"]
    first = cluster.slivers[sl.slivers[0]]
    first.usage, first.address = Usage(cpu_seconds=3.5, memory=2**20, pids=4), "10.1.2.3"
    assert tuple(sliver_fields(cluster, first, None)) == SLIVER
    records = complete(slice_view_steps(cluster, sl))
    frame = codec.encode(Ok(result=complete(slice_view_steps(cluster, sl, pack=True, arrays=True))), id="s", sender="c")
    body = msgpack.unpackb(frame)["body"]["result"]
    assert body["columns"] == SLIVER_COLUMNS and all(isinstance(r, list) for r in body["slivers"])
    assert result_of(ShowSlice(name="some", rows="arrays"), codec.decode(frame).msg) == records
    assert len(frame) < 0.7 * len(codec.encode(Ok(result=complete(slice_view_steps(cluster, sl, pack=True))), id="s", sender="c"))


def test_a_node_registering_again_as_it_was_writes_nothing_and_keeps_what_was_packed(tmp_path: Path) -> None:
    cluster, clock = cluster_of(tmp_path, 3)
    rec = next(iter(cluster.registry))
    info = rec.info
    row = node_row(cluster, rec, arrays=True)
    facts = rec.facts_of
    cluster.flush()
    writes: list[str] = []
    upsert = cluster.store.upsert_node
    cluster.store.upsert_node = lambda raw, *rest: (writes.append(raw["name"]), upsert(raw, *rest))[1]  # type: ignore[method-assign]
    cluster.register(dataclasses.replace(info), rec.peer or b"x", [], 0, clock())  # a retry: an equal info, another object
    cluster.flush()
    assert writes == [] and rec.info is info and rec.facts_of is facts and node_row(cluster, rec, arrays=True) == row
    cluster.registry.mark(rec, "down")
    cluster.register(dataclasses.replace(info), rec.peer or b"x", [], 0, clock())  # back up: its row says so
    cluster.flush()
    assert writes == [rec.name] and rec.state == "up"
    cluster.register(dataclasses.replace(info, labels={"new": "yes"}), rec.peer or b"x", [], 0, clock())  # new facts
    cluster.flush()
    assert writes == [rec.name, rec.name] and rec.info.labels == {"new": "yes"}
    assert any(raw["name"] == rec.name and raw["labels"] == {"new": "yes"} and state == "up" for raw, state, *_ in cluster.store.nodes())


def test_the_changing_part_of_a_row_packs_as_its_fields_do(tmp_path: Path) -> None:
    """A row made again packs its changing fields straight from their values
    (``node_state_row``, ``sliver_state_row``): byte for byte what packing them by name gives,
    with and without usage, history and a distance."""
    cluster, clock = cluster_of(tmp_path, 3)
    complete(cluster.create_steps(slice_doc("some", 2, distinct="none", cpu=0.5, memory="64Mi"), "admin", "r1", clock(), site=None))
    rec = next(iter(cluster.registry))
    for usage in (None, Usage(cpu_seconds=2.5, cpu_cores=0.25, memory=123 * 2**20, pids=3, net_rx=7)):
        rec.usage = usage
        assert node_state_row(node_state_values(cluster, rec)) == values(node_state_fields(cluster, rec))
    sl = cluster.slivers[cluster.slices["some"].slivers[0]]
    history = [Event(ts=5.0, event="placed", sliver=sl.id, node=sl.node, detail="on a node"), Event(ts=6.5, event="started")]
    for usage in (None, Usage(cpu_seconds=1.5, memory=2**20, pids=4)):
        sl.usage = usage
        for nearest in (None, 12.345):
            for hist in (None, history):
                assert sliver_state_row(sl, nearest, hist) == values(sliver_state_fields(sl, nearest, hist)), (usage, nearest, hist)


def test_the_nodes_up_are_counted_through_every_change_of_state(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """``ping``'s count of nodes up is kept as states change, not scanned: it follows a
    sweep, a node back, a goodbye, a revoked key, a node removed and one registered again,
    and a sweep (which scans anyway) finds it right, with nothing to put right."""
    cluster, clock = cluster_of(tmp_path, 8)
    reg = cluster.registry
    recs = list(reg)

    def scanned() -> int:
        return sum(rec.state == "up" for rec in reg)

    assert reg.up_count() == scanned() == 8
    for rec in recs[:5]:
        cluster.node_seen(rec, rec.name.encode(), clock() + 10.0)
    assert cluster.sweep(clock() + 10.0) == recs[5:] and reg.up_count() == scanned() == 5
    cluster.node_seen(recs[5], b"p", clock() + 10.0)  # back up
    cluster.goodbye(recs[0], "stopped by its operator", clock() + 10.0)
    cluster.goodbye(recs[6], "stopped after it went down", clock() + 10.0)  # down -> stopped
    cluster.revoke_node(recs[1].name, clock() + 10.0)
    assert reg.up_count() == scanned() == 4
    cluster.remove_node(recs[2])
    assert reg.up_count() == scanned() == 3
    cluster.register(recs[0].info, b"q", [], 0, clock() + 10.0)  # registers again
    assert reg.up_count() == scanned() == 4
    with caplog.at_level("WARNING", logger="controller.registry"):
        cluster.sweep(clock() + 10.5)
    assert reg.up_count() == scanned() == 4 and "without Registry.mark" not in caplog.text


def test_a_kept_node_row_follows_its_counts_and_a_last_seen_ahead_of_the_clock(tmp_path: Path) -> None:
    """A kept row is dropped by any field it shows being set (``NodeRecord.__setattr__``), and
    follows the counts of slivers and orphans changed in place; a last-seen time ahead of the
    clock (a restart's grace) shows the clock until the clock passes it."""
    cluster, clock = cluster_of(tmp_path, 3)
    complete(cluster.create_steps(slice_doc("some", 1, distinct="none", cpu=0.5, memory="64Mi"), "admin", "r1", clock(), site=None))
    spec = next(iter(cluster.slivers.values())).spec
    rec = next(iter(cluster.registry))

    def shown() -> dict[str, Any]:
        got: dict[str, Any] = msgpack.unpackb(node_row(cluster, rec))
        assert got == packed(node_view(cluster, rec))
        return got

    kept = node_row(cluster, rec, arrays=True)
    assert node_row(cluster, rec, arrays=True) is kept
    held = len(rec.slivers)
    rec.slivers.add("s-1")
    assert shown()["slivers"] == held + 1
    rec.orphans["o-1"] = spec
    assert shown()["orphans"] == 1
    del rec.orphans["o-1"]
    assert shown()["orphans"] == 0
    rec.last_seen = clock() + 5.0
    assert shown()["last_seen"] == clock()  # the clock, not the time ahead of it
    clock.now += 2.0
    assert shown()["last_seen"] == clock()
    clock.now += 10.0
    assert shown()["last_seen"] == rec.last_seen
    row = node_row(cluster, rec)
    assert node_row(cluster, rec) is row  # kept again once behind the clock


def test_a_brief_creates_show_row_parts_are_kept_ahead_and_used_by_its_first_show(tmp_path: Path) -> None:
    """``rows.prepared`` (a brief create's last steps): each sliver's kept part packed as
    arrays only, in steps, a sliver gone meanwhile skipped; the first ``show`` then uses
    those parts and gives the rows a show without them gives."""
    cluster, clock = cluster_of(tmp_path, 12)
    complete(cluster.create_steps(slice_doc("some", 10, distinct="none", cpu=0.5, memory="64Mi"), "admin", "r1", clock(), site=None))
    sl = cluster.slices["some"]
    ids = list(sl.slivers)
    steps = prepared(cluster, [*ids, "gone-00000000"], chunk=4)
    assert sum(1 for _ in steps) == 2  # 11 ids, a step after every 4
    parts = [cluster.slivers[sid].kept_of for sid in ids]
    assert all(p is not None and p[1] is None and isinstance(p[2], bytes) for p in parts)
    frame = codec.encode(Ok(result=complete(slice_view_steps(cluster, sl, pack=True, arrays=True))), id="s", sender="c")
    assert [cluster.slivers[sid].kept_of for sid in ids] == parts and all(cluster.slivers[sid].kept_of is p for sid, p in zip(ids, parts, strict=True))
    assert result_of(ShowSlice(name="some", rows="arrays"), codec.decode(frame).msg) == complete(slice_view_steps(cluster, sl))
