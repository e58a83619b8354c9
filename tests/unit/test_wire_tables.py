"""Tables (protocol 2.7): a reply's records sent as rows, arrays of their fields in the order
its ``columns`` give. A row decodes to the record its map decodes to, or is refused for the same
reason at the same path; columns in any order, unknown or missing, are followed; a bad
``columns`` is refused, not trusted."""

from __future__ import annotations

import dataclasses
import json
import math
import random
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slices import codec
from slices.errors import ProtocolError
from slices.model import Resources, Usage
from slices.wire import Columns, _record_decoder, decode, fields_of, fld, row_packable, to_wire
from tests.unit.test_wire_decoder import ANY_VALUE, FIELDS, Probe, outcome

pytestmark = pytest.mark.timeout(120)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Table:
    rows: list[Probe] = fld(factory=list, max_items=100)
    one: Probe | None = None
    total: int = fld(0, lo=0)
    columns: Columns | None = fld(None, max_items=256)


def as_row(doc: dict[str, Any], order: list[str]) -> list[Any]:
    """``doc``'s values in ``order``, cut after the last one it has (a missing field in the middle
    cannot be said in a row: it is sent as its value)."""
    row = [doc.get(name) for name in order]
    while row and order[len(row) - 1] not in doc:
        row.pop()
    return row


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.sampled_from(FIELDS), ANY_VALUE, max_size=len(FIELDS)), st.randoms(use_true_random=False))
def test_a_row_decodes_as_its_map_or_is_refused_alike(doc: dict[str, Any], rnd: random.Random) -> None:
    doc.setdefault("name", "probe")
    order = FIELDS[:]
    rnd.shuffle(order)
    full = {name: doc.get(name) for name in order if name in doc}
    # the fields the row cannot leave out (before its last one) are sent: as the map would have them
    row = as_row(full, order)
    sent = {name: value for name, value in zip(order, row, strict=False)}
    want = outcome(_record_decoder(Table), {"rows": [sent]})
    got = outcome(_record_decoder(Table), {"rows": [row], "columns": {"rows": order}})
    if want[0] == "ok":
        assert got == ("ok", Table(rows=want[1].rows)), (row, order)
    else:
        assert got == want, (row, order)


def test_columns_unknown_missing_and_reordered_are_followed() -> None:
    res = Resources(cpu=2.0, memory=5)
    order = ["res", "count", "name", "newer_field"]  # a newer peer's column is ignored
    got = decode(Table, {"rows": [[[5, 2.0], 3, "a", "x"]], "total": 1, "columns": {"rows": order, "rows.res": ["memory", "cpu"]}})
    assert got == Table(rows=[Probe(name="a", count=3, res=res)], total=1)
    assert got.columns is None  # how its rows travelled is not part of the record
    short = decode(Table, {"rows": [["b"]], "columns": {"rows": ["name", "count", "ratio"]}})
    assert short.rows == [Probe(name="b")]  # fields a row does not reach take their defaults
    maps = decode(Table, {"rows": [{"name": "c"}], "one": ["d"], "columns": {"one": ["name"]}})  # only the paths named are rows
    assert maps.rows == [Probe(name="c")] and maps.one == Probe(name="d")
    single = decode(Table, {"one": ["e", 4], "columns": {"one": ["name", "count"]}})
    assert single.one == Probe(name="e", count=4)


def test_a_full_row_is_decoded_at_once_and_still_checked_value_by_value() -> None:
    """A row with every column sent takes the one-expression path (``wire._full_row``); a
    bad value in it, scalar or nested, is refused exactly as field by field."""
    order = [*reversed(FIELDS), "newer_field"]
    good = {"name": "p", "code": "ab", "text": "t", "data": "d", "count": 3, "ratio": 0.25, "free": 2.0, "wide": -1.0, "flag": True, "maybe": None, "tags": ["a"], "res": {"cpu": 1.0, "memory": 2}}
    cols: Columns = {"rows": order, "rows.res": ["cpu", "memory", "disk", "bandwidth"]}

    def row(doc: dict[str, Any]) -> list[Any]:
        return [[*doc["res"].values(), 0, 0] if name == "res" else doc.get(name) for name in order]

    got = decode(Table, {"rows": [row(good)], "columns": cols})
    assert got.rows == [decode(Probe, good)]
    for field, bad in [("count", 11), ("name", "Bad"), ("maybe", 0), ("flag", 1), ("tags", ["a"] * 4), ("res", {"cpu": -1.0, "memory": 2})]:
        want = outcome(_record_decoder(Table), {"rows": [{**good, field: bad}]})
        assert want[0] == "bad"
        assert outcome(_record_decoder(Table), {"rows": [row({**good, field: bad})], "columns": cols}) == want, field


@pytest.mark.parametrize(
    ("value", "phrase"),
    [
        ({"rows": [{"name": "a"}], "columns": {"rows": ["name"]}}, "rows[0]: must be a row (a list)"),
        ({"rows": [["a", 11]], "columns": {"rows": ["name", "count"]}}, "rows[0].count: must be between"),
        ({"rows": [["a", [math.inf]]], "columns": {"rows": ["name", "res"], "rows.res": ["cpu"]}}, "rows[0].res.cpu: must be finite"),
        ({"rows": [[]], "columns": {"rows": ["name"]}}, "rows[0].name: required"),
        ({"rows": [], "columns": ["rows"]}, "columns: must be a map"),
        ({"rows": [], "columns": {"rows": "name"}}, "columns: each entry"),
        ({"rows": [], "columns": {"rows/..": ["name"]}}, "columns: each entry"),
        ({"rows": [], "columns": {"rows": ["name", "name"]}}, "must be distinct names"),
        ({"rows": [], "columns": {"rows": ["na me"]}}, "must be distinct names"),
        ({"rows": [], "columns": {"total": ["x"]}}, "total holds no records"),
        ({"rows": [], "columns": {f"p{i}": [] for i in range(17)}}, "at most 16"),
        ({"rows": [], "columns": {"rows": [f"f{i}" for i in range(257)]}}, "at most 256"),
    ],
)
def test_bad_rows_and_bad_columns_are_refused_with_where(value: dict[str, Any], phrase: str) -> None:
    with pytest.raises(ProtocolError) as err:
        decode(Table, value, "reply")
    assert phrase in str(err.value), str(err.value)


def test_row_packable_packs_records_in_field_order() -> None:
    usage = Usage(cpu_seconds=1.5, memory=7, pids=2)
    packed = msgpack.unpackb(msgpack.packb({"u": usage, "r": [Resources(cpu=1.0)]}, default=row_packable))
    assert packed == {"u": [1.5, 0.0, 7, 0, 0, 2, 0, 0], "r": [[1.0, 0, 0, 0]]}
    assert fields_of(Usage)[:3] == ["cpu_seconds", "cpu_cores", "memory"]
    with pytest.raises(TypeError):
        row_packable(object())


def test_a_tabled_reply_through_the_codec_shows_as_json_without_its_columns() -> None:
    from slices.protocol import ListNodes, NodeList, NodeView, Ok, result_of

    view = NodeView(site="s", city="c", country="CH", region="europe", lat=1.0, lon=2.0, name="n-1", capacity=Resources(cpu=4.0), usage=Usage(pids=3))
    wire = to_wire(view)
    order = list(reversed(wire))
    nested = {f"nodes.{k}": fields_of(Resources) for k in ("capacity", "reserve", "allocated", "placeable")}
    row = [list(wire[k].values()) if f"nodes.{k}" in nested or k == "usage" else wire[k] for k in order]  # records inside a row are rows
    body = {"nodes": [row], "total": 1, "columns": {"nodes": order, **nested, "nodes.usage": fields_of(Usage)}}
    frame = codec.encode(Ok(result=body), id="x", sender="c")
    got = result_of(ListNodes(rows="arrays"), codec.decode(frame).msg)
    assert got == NodeList(nodes=[view], total=1)
    assert json.loads(json.dumps(to_wire(got)))["columns"] is None
