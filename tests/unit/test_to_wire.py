"""``to_wire``: a record as the plain maps, lists and scalars it stands for (the CLI's tables
and ``--json``, the agents' cache files). It copies a plain record's fields at once and walks
only the fields whose types are not scalars; it must give exactly what a walk over every field
gives, and containers of its own that the caller may change."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slices.catalogue import builtin_catalogue
from slices.errors import ProtocolError
from slices.model import NodeInfo, Resources, Usage
from slices.protocol import NodeView
from slices.simcluster import sim_nodes
from slices.wire import decode, fld, to_wire
from tests.unit.test_wire_decoder import ANY_VALUE, FIELDS, Probe

pytestmark = pytest.mark.timeout(120)


def walk(obj: Any) -> Any:
    """The oracle: every field read by name, every container made anew."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: walk(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [walk(v) for v in obj]
    if isinstance(obj, dict):
        return {k: walk(v) for k, v in obj.items()}
    return obj


@dataclasses.dataclass(frozen=True, kw_only=True)
class Nest:
    name: str = fld("n")
    kind: Literal["a", "b"] = "a"
    maybe: str | None = None
    one: Probe | None = None
    many: list[Probe] = fld(factory=list)
    by_name: dict[str, Resources] = fld(factory=dict)
    pair: tuple[str, ...] = ()
    anything: Any = None


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(FIELDS), ANY_VALUE, max_size=len(FIELDS)))
def test_a_decoded_record_is_what_a_walk_over_every_field_gives(doc: dict[str, Any]) -> None:
    doc.setdefault("name", "probe")
    try:
        probe = decode(Probe, doc)
    except ProtocolError:
        return  # refused: nothing to show
    got = to_wire(probe)
    assert got == walk(probe)
    assert got["tags"] is not probe.tags and got["res"] == dataclasses.asdict(probe.res)


def test_nested_optional_listed_mapped_and_untyped_fields() -> None:
    probe = Probe(name="p", tags=["a"], res=Resources(cpu=1.0, memory=2))
    nests = [
        Nest(),
        Nest(maybe="m", one=probe, many=[probe, probe], by_name={"x": Resources(cpu=0.5)}, pair=("a", "b"), anything={"k": [probe]}),
        Nest(kind="b", anything=[1, "two", None, (3, 4)]),
    ]
    for nest in nests:
        got = to_wire(nest)
        assert got == walk(nest)
        assert type(got["pair"]) is list  # a tuple leaves as a list, as msgpack would give it back


def test_the_result_is_the_callers_to_change() -> None:
    probe = Probe(name="p", tags=["a"])
    out = to_wire(Nest(one=probe, many=[probe], by_name={"x": Resources(cpu=0.5)}))
    out["one"]["tags"].append("b")
    out["many"][0]["res"]["cpu"] = 9.0
    out["by_name"]["x"]["cpu"] = 9.0
    out["name"] = "changed"
    assert probe.tags == ["a"] and probe.res.cpu == 0.0
    assert to_wire(Nest(one=probe))["one"]["tags"] == ["a"]


def test_records_made_by_their_own_init_or_holding_a_cached_value() -> None:
    """``NodeInfo`` checks itself in ``__post_init__`` and keeps a cached property in its
    ``__dict__``: its fields are read by name, and the cached value is not one of them."""
    info = NodeInfo.from_wire(sim_nodes(builtin_catalogue(), 1, "sim")[0])
    before = to_wire(info)
    assert before == walk(info)
    cached = [name for name, v in vars(type(info)).items() if isinstance(v, functools.cached_property)]
    assert cached
    for name in cached:
        getattr(info, name)  # now in its __dict__
    assert to_wire(info) == before and not set(cached) & set(before)


def test_a_node_row_with_usage() -> None:
    view = NodeView(
        site="lab", city="Princeton", country="US", region="north-america", lat=40.3, lon=-74.6, name="lab-1",
        backends={"container": "runc"}, images=["busybox"], capacity=Resources(cpu=4.0, memory=8 << 30), usage=Usage(cpu_cores=0.5, memory=1 << 20),
    )  # fmt: skip
    got = to_wire(view)
    assert got == walk(view)
    assert got["usage"]["cpu_cores"] == 0.5 and got["capacity"]["memory"] == 8 << 30 and got["images"] == ["busybox"]
