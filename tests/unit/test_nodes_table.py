"""``slicemesh nodes`` shows capacity, reserve, allocated and placeable, so a refusal can be
checked by eye (pure rendering; the CLI test below runs it against a simulation)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slices import render

GiB = 1 << 30


def node(**kw: object) -> dict[str, object]:
    base: dict[str, object] = {
        "name": "lab1", "site": "lab", "city": "Princeton", "country": "US", "region": "north-america", "state": "up",
        "backends": {"container": "runc"}, "capacity": {"cpu": 4.0, "memory": 8 * GiB}, "reserve": {"cpu": 1.0, "memory": GiB},
        "placeable": {"cpu": 3.0, "memory": 7 * GiB}, "allocated": {"cpu": 2.5, "memory": 6 * GiB}, "overbook": 1.0, "slivers": 3, "facts": {},
    }  # fmt: skip
    return {**base, **kw}


def test_each_resource_reads_allocated_placeable_capacity_reserve() -> None:
    text = render.nodes_text([node()])
    header, row = text.splitlines()[:2]
    assert "CPU ALLOC/PLACEABLE (CAP-RESERVE)" in header and "MEMORY ALLOC/PLACEABLE (CAP-RESERVE)" in header
    assert "2.5/3 (4-1)" in row and "6Gi/7Gi (8Gi-1Gi)" in row


def test_overbooking_and_an_empty_node_are_shown() -> None:
    row = render.nodes_text([node(overbook=1.5, placeable={"cpu": 4.5, "memory": 10.5 * GiB}, allocated={"cpu": 0.0, "memory": 0})]).splitlines()[1]
    assert "0/4.5 (4-1)x1.5" in row and "0/10.5Gi (8Gi-1Gi)x1.5" in row


def test_a_cordoned_or_draining_node_says_so_beside_its_state() -> None:
    text = render.nodes_text([node(name="a1", admin="cordoned"), node(name="a2", admin="draining"), node(name="a3", admin="active")])
    rows = {line.split()[0]: line for line in text.splitlines()[1:4]}
    assert "up, cordoned" in rows["a1"] and "up, draining" in rows["a2"]
    assert "cordoned" not in rows["a3"] and "draining" not in rows["a3"]


def test_labels_are_shown_with_the_wide_area_path() -> None:
    text = render.nodes_text([node(labels={"wan": "tun", "rack": "r7"}), node(name="lab2")])
    assert "labels (" in text and "lab1: rack r7; wan tun" in text and "lab2:" not in text.split("labels (")[1]


def test_a_slices_table_counts_each_slivers_restarts_and_moves() -> None:
    base = {"node": "n1", "site": "s", "city": "c", "country": "US", "region": "europe", "request": "anywhere", "backend": "sim", "state": "running", "usage": None, "reason": None}
    header, row = render.placement_table([{**base, "restarts": 3, "moves": 1}], show_state=True).splitlines()[:2]
    at = header.index("RESTARTS"), header.index("MOVES")  # columns are padded: a value starts under its header
    assert (row[at[0] :].split()[0], row[at[1] :].split()[0]) == ("3", "1")


def test_delete_names_each_released_sliver_up_to_a_screenful() -> None:
    few = {"name": "s", "slivers": 2, "released": [{"id": "s-0", "node": "n1"}, {"id": "s-1", "node": "n2"}]}
    assert render.deleted_text(few, removed=True).splitlines() == ["deleted slice s (2 slivers released, and removed from every node)", "  s-0 on n1", "  s-1 on n2"]
    many = {"name": "s", "slivers": 25, "released": [{"id": f"s-{i}", "node": "n1"} for i in range(25)]}
    lines = render.deleted_text(many, removed=False).splitlines()
    assert lines[0] == "deleted slice s (25 slivers released)" and len(lines) == 1 + render.RELEASED_SHOWN + 1
    assert lines[-1] == "  ... and 5 more (--json lists them all)"
    assert render.deleted_text({"name": "s", "slivers": 2}, removed=False) == "deleted slice s (2 slivers released)"  # a controller before 2.5


def test_a_table_escapes_a_control_character_in_any_cell_and_pads_by_what_is_shown() -> None:
    clean = render.table(["A", "B"], [["x", 1], [None, ""], ["long cell", 2.5]])
    assert clean.splitlines() == ["A          B", "x          1", "-          -", "long cell  2.5"]
    hostile = render.table(["A", "B"], [["ok", "evil\x1b[2Jname"], ["new\nline", "x"]])
    lines = hostile.splitlines()
    assert len(lines) == 3 and "\x1b" not in hostile
    assert lines[1] == "ok" + " " * 9 + "evil\\x1b[2Jname" and lines[2] == "new\\nline  x"  # the escape is what is measured


def test_a_row_with_more_or_fewer_cells_than_headers_is_refused() -> None:
    for row in (["only one"], ["a", "b", "c"]):
        with pytest.raises(ValueError, match="cells under 2 headers"):
            render.table(["A", "B"], [row])


def test_many_nodes_alike_show_each_their_own_figures() -> None:
    nodes = [node(name=f"n{i}", allocated={"cpu": i * 0.5, "memory": i * GiB}) for i in range(4)]
    rows = render.nodes_text(nodes).splitlines()[1:5]
    assert [r.split()[0] for r in rows] == ["n0", "n1", "n2", "n3"]
    assert "0/3 (4-1)" in rows[0] and "1.5/3 (4-1)" in rows[3] and "3Gi/7Gi (8Gi-1Gi)" in rows[3]


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=render.LONG_LIST + 5) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=400,
)


@settings(max_examples=150, deadline=None)
@given(JSONISH)
def test_json_text_is_the_same_document_as_indented_json(doc: object) -> None:
    text = render.json_text(doc)
    assert json.loads(text) == json.loads(json.dumps(doc, sort_keys=True))


def test_json_text_indents_a_short_document_and_puts_a_long_lists_items_one_a_line() -> None:
    short = {"b": [1, 2], "a": {"x": None}}
    assert render.json_text(short) == json.dumps(short, indent=2, sort_keys=True)
    rows = [{"name": f"n{i}", "cpu": 1.5} for i in range(render.LONG_LIST + 1)]
    lines = render.json_text({"total": 101, "nodes": rows, "when": ("a", "b")}).splitlines()
    assert lines[:2] == ["{", '  "nodes": [']
    assert lines[2] == '    {"cpu": 1.5, "name": "n0"},' and lines[2 + render.LONG_LIST] == '    {"cpu": 1.5, "name": "n100"}'
    assert lines[3 + render.LONG_LIST :] == ["  ],", '  "total": 101,', '  "when": [', '    "a",', '    "b"', "  ]", "}"]
