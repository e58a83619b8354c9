"""``slicemesh nodes`` shows capacity, reserve, allocated and placeable, so a refusal can be
checked by eye (pure rendering; the CLI test below runs it against a simulation)."""

from __future__ import annotations

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
