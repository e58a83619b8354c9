"""slices/wire.py's generated record decoders against a plain oracle: same records, same refusals.

The generated decoder checks common values inline and hands anything else to the field's full
decoder. This test builds the oracle from those same full decoders, field by field, the way the
decoder worked before it was generated, and compares the two on hostile values near every bound.
"""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slices import protocol as m
from slices.errors import ProtocolError
from slices.model import NodeInfo, Resources, SliverSpec
from slices.wire import Bad, _compile, _kept, _record_decoder, fld


@dataclasses.dataclass(frozen=True, kw_only=True)
class Probe:
    name: str = fld(pattern=r"[a-z][a-z0-9-]*")
    code: str = fld("x", max_len=4)
    text: str = fld("", kind="text", max_len=8)
    data: str = fld("", kind="data", max_len=8)
    count: int = fld(0, lo=0, hi=10)
    ratio: float = fld(0.5, lo=0, hi=1)
    free: float = 0.0
    wide: float = fld(0.0, lo=-math.inf, hi=math.inf)
    flag: bool = False
    maybe: int | None = fld(None, lo=1, hi=5)
    tags: list[str] = fld(factory=list, max_items=3)
    res: Resources = fld(factory=Resources)


def oracle(cls: type[Any]) -> Any:
    hints = typing.get_type_hints(cls)
    fields = [(f.name, _compile(hints[f.name], f.metadata), f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING) for f in dataclasses.fields(cls) if f.init]

    def dec(value: object) -> Any:
        if not isinstance(value, dict):
            raise Bad("must be a map")
        kwargs = {}
        for name, sub, required in fields:
            if name not in value:
                if required:
                    raise Bad("required", name)
                continue
            try:
                kwargs[name] = sub(value[name])
            except Bad as exc:
                raise exc.under(name) from None
        return cls(**kwargs)

    return dec


def outcome(dec: Any, value: object) -> tuple[str, Any]:
    try:
        return "ok", dec(value)
    except Bad as exc:
        return "bad", (exc.path, exc.reason)


ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 1, 10, 11, -1, 5, 6]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, 1.0, 1.0000001, -0.0, math.inf, -math.inf, math.nan, 1e301]),
    st.text(max_size=12),
    st.sampled_from(["ok", "a-1", "A", "abcd", "abcde", "a\x00b", "a\x1bb", "\x7f", "tab\there", "é"]),
    st.binary(max_size=4),
    st.lists(st.sampled_from(["a", "b", "\x00", 3]), max_size=5),
    st.dictionaries(st.sampled_from(["cpu", "memory", "x"]), st.sampled_from([1, 1.5, -1, "x", math.inf]), max_size=3),
)
FIELDS = [f.name for f in dataclasses.fields(Probe)]


@settings(max_examples=600, deadline=None)
@given(st.dictionaries(st.sampled_from([*FIELDS, "unknown"]), ANY_VALUE, max_size=len(FIELDS) + 1))
def test_generated_decoder_matches_the_oracle(doc: dict[str, Any]) -> None:
    doc.setdefault("name", "probe")
    got, want = outcome(_record_decoder(Probe), doc), outcome(oracle(Probe), doc)
    assert got == want, doc


@pytest.mark.parametrize(
    ("field", "value", "path", "phrase"),
    [
        ("name", "Bad", "name", "does not match"),
        ("code", "abcde", "code", "longer than 4"),
        ("code", "a\x1b", "code", "control characters"),
        ("data", "a\x00", "data", "NUL"),
        ("count", 11, "count", "between"),
        ("count", True, "count", "whole number"),
        ("ratio", 1.5, "ratio", "between"),
        ("wide", math.inf, "wide", "finite"),
        ("wide", math.nan, "wide", "finite"),
        ("free", 1e301, "free", "between"),
        ("flag", 1, "flag", "true or false"),
        ("maybe", 0, "maybe", "between"),
        ("tags", ["a", "b", "c", "d"], "tags", "more than 3"),
        ("res", {"cpu": math.inf}, "res.cpu", "finite"),
    ],
)
def test_fast_paths_still_refuse(field: str, value: object, path: str, phrase: str) -> None:
    kind, (where, reason) = outcome(_record_decoder(Probe), {"name": "ok", field: value})
    assert kind == "bad" and where == path and phrase in reason


def test_text_is_defanged_defaults_are_fresh_and_nested_records_decode() -> None:
    dec = _record_decoder(Probe)
    a, b = dec({"name": "ok", "text": "a\x1b[2Jb", "count": 3, "ratio": 1}), dec({"name": "ok"})
    assert a.text == "a?[2Jb" and a.ratio == 1.0 and isinstance(a.ratio, float)
    assert a.tags == [] and a.tags is not b.tags, "a default factory runs per record"
    assert outcome(dec, {}) == ("bad", ("name", "required"))
    view = _record_decoder(m.NodeList)({"nodes": [{"name": "n1", "site": "s", "city": "c", "country": "US", "region": "r", "lat": 1, "lon": 2, "capacity": {"cpu": 2}}], "total": 1})
    assert view.nodes[0].capacity.cpu == 2.0 and view.nodes[0].lat == 1.0 and view.total == 1


@dataclasses.dataclass(frozen=True)
class Checked:
    n: int = fld(0, lo=0, hi=10)

    def __post_init__(self) -> None:
        if self.n == 7:
            raise Bad("seven is refused", "n")


@dataclasses.dataclass
class HandMade:
    n: int = 0

    def __init__(self, n: int = 0) -> None:  # dataclasses keeps a hand-written __init__
        self.n, self.doubled = n, 2 * n


def test_records_filled_without_init_are_what_init_makes() -> None:
    """Plain records are filled field by field (no ``__init__``); the rest still go through it."""
    doc = {"name": "ok", "count": 3, "tags": ["a"], "res": {"cpu": 1.5}}
    made, built = _record_decoder(Probe)(doc), oracle(Probe)(doc)
    assert made == built and hash(made.res) == hash(built.res) and vars(made) == vars(built)
    assert list(vars(made)) == [f.name for f in dataclasses.fields(Probe)], "every field set, in order"
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.count = 4  # type: ignore[misc]
    assert outcome(_record_decoder(Checked), {"n": 7}) == ("bad", ("n", "seven is refused")), "__post_init__ still runs"
    assert _record_decoder(Checked)({"n": 3}) == Checked(3)
    assert outcome(_record_decoder(NodeInfo), {"name": "n", "site": "s", "location": {"city": "c", "country": "US", "region": "r", "lat": 0, "lon": 0}, "capacity": {}})[0] == "bad"
    assert _record_decoder(HandMade)({"n": 2}).doubled == 4, "a hand-written __init__ is called"


def test_replaced_is_dataclasses_replace() -> None:
    from slices.wire import replaced

    probe = _record_decoder(Probe)({"name": "ok", "count": 3, "tags": ["a"]})
    assert replaced(probe, name="other") == dataclasses.replace(probe, name="other")
    assert probe.name == "ok" and replaced(probe, name="x").tags is probe.tags, "a shallow copy, as replace makes"
    assert _record_decoder(Checked)({"n": 3}) == replaced(Checked(3), n=3)
    with pytest.raises(Bad):
        replaced(Checked(3), n=7)  # not plain: through __init__ and __post_init__
    with pytest.raises(TypeError):
        replaced(probe, nonsense=1)  # an unknown field is refused, as by replace


COLLECTIONS = [
    (list[str], {"pattern": re.compile(r"[a-z]+"), "max_items": 3}),
    (list[str], {"kind": "text", "max_len": 4}),
    (tuple[int, ...], {"lo": 0, "hi": 10, "max_items": 4}),
    (list[float], {"lo": 0, "hi": 1}),
    (dict[str, str], {"kind": "text", "max_len": 4, "max_items": 2, "key_pattern": re.compile(r"[a-z]+")}),
    (dict[str, float], {"lo": -1, "hi": 1}),
    (dict[str, int], {"pattern": None}),
]
ITEMS = st.one_of(st.sampled_from(["a", "ab", "abcde", "A", "a\x1b", "\x00", "", "é"]), st.sampled_from([0, 1, 11, -1, True, 0.5, 2.0, math.nan, math.inf, None]))
COLLECTION_VALUES = st.one_of(
    st.lists(ITEMS, max_size=5),
    st.lists(ITEMS, max_size=5).map(tuple),
    st.dictionaries(ITEMS.filter(lambda k: isinstance(k, (str, int))), ITEMS, max_size=4),
    ITEMS,
)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(range(len(COLLECTIONS))), COLLECTION_VALUES)
def test_a_collection_checked_inline_is_what_its_full_decoder_gives(which: int, value: object) -> None:
    hint, meta = COLLECTIONS[which]
    fast = _compile(hint, meta)
    slow = fast.__globals__["slow"]  # the full decoder behind the inline loop (_fast_collection)
    got, want = outcome(fast, value), outcome(slow, value)
    assert got == want and type(got[1]) is type(want[1]), (hint, value)


def test_a_kept_record_decodes_a_map_seen_lately_to_the_same_object() -> None:
    """``SliverSpec.WIRE_CACHE``: an agent is sent each spec again in every desired set."""
    spec = SliverSpec(id="k-1", slice="k", isolation="container", image="busybox", resources=Resources(cpu=0.1, memory=1 << 26), env={"A": "1"})
    wire = spec.to_wire()
    first, again = SliverSpec.from_wire(dict(wire)), SliverSpec.from_wire(dict(wire))
    assert first == spec and again is first
    other = SliverSpec.from_wire({**wire, "env": {"A": "2"}})
    assert other is not first and other.env == {"A": "2"} and first.env == {"A": "1"}
    for bad in ({**wire, "id": "../etc"}, {**wire, "resources": "lots"}):  # refused each time, never kept
        for _ in range(2):
            with pytest.raises(ProtocolError):
                SliverSpec.from_wire(bad)

    calls: list[object] = []
    small = _kept(lambda v: calls.append(v) or len(calls), 2)
    assert [small({"n": 1}), small({"n": 1}), small({"n": 2}), small({"n": 3}), small({"n": 1})] == [1, 1, 2, 3, 4], "the oldest of 2 went"
    assert small([1]) == 5 and small([1]) == 6, "rows are not kept"
