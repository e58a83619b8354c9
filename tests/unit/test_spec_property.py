"""Property: whatever document arrives, parse_spec returns a bounded, encodable spec or a SpecError.

Three sources of documents: arbitrary Python values (what a hostile wire peer could decode),
spec-shaped maps whose fields hold plausible and hostile values (to reach the success paths),
and YAML-ish text (the loader's paths). Nothing else may escape: no OverflowError, no
RecursionError, no TypeError, no UnicodeEncodeError.
"""

from __future__ import annotations

import json
import math
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slices import limits
from slices.errors import SpecError
from slices.spec import SliceSpec, load_spec_text, parse_spec
from slices.terminal import find_unprintable
from tests.unit.test_limits import sliver_of

pytestmark = pytest.mark.timeout(300)

PROPERTY = settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

HOSTILE_TEXT = st.sampled_from(["\x1b[31m", "\x00", "\ud800", "\u202e", "\n", "x" * 5000, "nan", "inf", "1e400", "9" * 400, "-1", "", " "])
NUMBERS = st.one_of(
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([2**63 - 1, 2**63, 2**64, 2**64 + 1, -(2**63) - 1, 10**400, 0, -1]),
    st.floats(),  # NaN and infinities included
)
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, st.text(max_size=30), HOSTILE_TEXT, st.binary(max_size=8))
ANYTHING = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=6),
        st.dictionaries(st.one_of(st.text(max_size=12), st.integers(), st.none()), inner, max_size=6),
        st.tuples(inner, inner),
        st.frozensets(st.integers(), max_size=3),
    ),
    max_leaves=40,
)


def quantity(suffixes: list[str]) -> st.SearchStrategy[str]:
    small = st.integers(min_value=0, max_value=4096).map(str)
    huge = st.one_of(st.integers(min_value=0, max_value=10**25).map(str), st.floats(min_value=0, max_value=1e25).map(lambda f: f"{f:.3f}"))
    return st.builds(lambda n, s: f"{n}{s}", st.one_of(small, small, small, huge), st.sampled_from(suffixes))


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly a plausible value (so documents reach the success paths), sometimes anything."""
    return st.integers(0, 9).flatmap(lambda i: SCALARS if i == 5 else strategy)


LOCATION = st.one_of(
    st.fixed_dictionaries({"region": maybe(st.sampled_from(["asia", "europe", "mars"]))}, optional={"count": maybe(st.integers(0, 10))}),
    st.fixed_dictionaries({"country": maybe(st.sampled_from(["JP", "us", "XX"]))}),
    st.fixed_dictionaries({"site": maybe(st.text(max_size=20))}, optional={"count": maybe(st.integers(-1, 200_000))}),
    st.fixed_dictionaries(
        {"near": st.fixed_dictionaries({"lat": maybe(st.floats(-100, 100)), "lon": maybe(st.floats())}), "within_km": maybe(st.floats(-1, 30_000))},
        optional={"count": maybe(st.integers(1, 3))},
    ),
    ANYTHING,
)
SPEC_SHAPED = st.fixed_dictionaries(
    {"name": maybe(st.from_regex(r"[a-z][a-z0-9-]{0,70}", fullmatch=True)), "description": maybe(st.text(min_size=1, max_size=40))},
    optional={
        "lifetime": maybe(quantity(["m", "h", "d", "w", "y", ""])),
        "isolation": maybe(st.sampled_from(["container", "vm", "jail"])),
        "command": maybe(st.one_of(st.text(max_size=50), st.lists(st.one_of(st.text(max_size=20), NUMBERS), max_size=5))),
        "env": maybe(st.dictionaries(st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,10}", fullmatch=True), SCALARS, max_size=5)),
        "resources": maybe(
            st.fixed_dictionaries(
                {},
                optional={
                    "cpu": maybe(st.one_of(st.floats(0, 300), NUMBERS, quantity(["m", ""]))),
                    "memory": maybe(st.one_of(NUMBERS, quantity(["Mi", "Gi", "Ti", ""]))),
                    "disk": maybe(quantity(["Mi", "Gi", "Ti"])),
                    "bandwidth": maybe(quantity(["Kbit", "Mbit", "Gbit"])),
                },
            )
        ),
        "placement": maybe(
            st.fixed_dictionaries(
                {},
                optional={
                    "count": maybe(st.integers(-1, 200_000)),
                    "locations": maybe(st.lists(LOCATION, max_size=4)),
                    "min_distance_km": maybe(st.floats(-1, 30_000)),
                    "min_count": maybe(st.integers(0, 10)),
                    "exclude": maybe(st.fixed_dictionaries({}, optional={"sites": maybe(st.lists(st.text(max_size=10), max_size=3))})),
                },
            )
        ),
    },
)
FIELD_VALUES = st.sampled_from(
    ["lifetime: 14d", "lifetime: 99999999999999999999d", "resources: {cpu: 500m, memory: 64Mi, disk: 1Gi, bandwidth: 10Mbit}", "resources: {cpu: .inf}",
     "resources: {memory: 1.0e+400}", "resources: {bandwidth: 99999999999999999999Gbit}", "resources: {cpu: 256, memory: 16Ti, disk: 8Ti}",
     "placement: {count: 3, locations: [{region: asia}, {near: {lat: 1.5, lon: 2}, within_km: 5}], min_distance_km: 10}",
     "placement: {locations: [{near: {lat: .nan, lon: 1}, within_km: 5}]}", "placement: {min_distance_km: .nan}", "placement: {exclude: {sites: [a, b]}}",
     "command: [sh, -c, 'sleep 1']", "command: sleep 10", "env: {A: 1, B: x}", "env: {B: 18446744073709551617}", "env: {D: 2024-01-01, N: NO}",
     "isolation: vm", "image: alpine", 'description: "\\e[31m"', "owner: alice"]
)  # fmt: skip
YAML_TOKENS = st.sampled_from(
    ["name: a\n", "description: d\n", "resources:\n", "  cpu: ", "  memory: ", "placement:\n", "  locations:\n", "    - ", "env: ", "command: ", "{", "}", "[", "]",
     ", ", ": ", "\n", "  ", "- ", "&a ", "*a ", "!!binary ", "!!set ", "!!python/object ", ".inf", ".nan", "-.inf", "1.0e+400", "9" * 30, "0x" + "f" * 20,
     "2024-01-01", "NO", "yes", '"\\e[31m"', '"\\ud800"', '"\\0"', "'", '"', "#", "|\n", ">\n", "---\n", "...\n", "? ", "<<: *a\n", "near: {lat: 1, lon: 2}", "within_km: 5"]
)  # fmt: skip


def assert_bounded(spec: SliceSpec) -> None:
    r, p = spec.resources, spec.placement
    assert math.isfinite(r.cpu) and limits.MIN_CPU <= r.cpu <= limits.MAX_CPU
    assert limits.MIN_MEMORY <= r.memory <= limits.MAX_MEMORY
    assert limits.MIN_DISK <= r.disk <= limits.MAX_DISK
    assert r.bandwidth == 0 or limits.MIN_BANDWIDTH <= r.bandwidth <= limits.MAX_BANDWIDTH  # 0: unshaped
    assert limits.MIN_LIFETIME <= spec.lifetime <= limits.MAX_LIFETIME
    assert 1 <= p.count <= limits.MAX_COUNT and (p.min_count is None or 1 <= p.min_count <= p.count)
    assert p.min_distance_km is None or 0 <= p.min_distance_km <= limits.MAX_KM
    assert len(p.locations) <= limits.MAX_LOCATIONS
    for loc in p.locations:
        assert 1 <= loc.count <= limits.MAX_COUNT
        if loc.kind == "near":
            assert loc.lat is not None and loc.lon is not None and loc.within_km is not None
            assert -90 <= loc.lat <= 90 and -180 <= loc.lon <= 180 and 0 < loc.within_km <= limits.MAX_KM
        else:
            assert loc.value is not None and find_unprintable(loc.value) is None and len(loc.value) <= limits.MAX_NAME_CHARS
    for names in (p.exclude.sites, p.exclude.countries, p.exclude.nodes):
        assert len(names) <= limits.MAX_EXCLUDE_NAMES and all(find_unprintable(n) is None and len(n) <= limits.MAX_NAME_CHARS for n in names)
    assert find_unprintable(spec.description) is None and len(spec.description) <= limits.MAX_DESCRIPTION_CHARS
    if spec.command is not None:
        assert len(spec.command) <= limits.MAX_COMMAND_ARGS and sum(len(a.encode()) + 1 for a in spec.command) <= limits.MAX_COMMAND_BYTES
    assert len(spec.env) <= limits.MAX_ENV_VARS and sum(len(f"{k}={v}".encode()) + 1 for k, v in spec.env.items()) <= limits.MAX_ENV_BYTES
    wire = sliver_of(spec).to_wire()
    msgpack.packb(wire, use_bin_type=True)
    json.dumps(wire, allow_nan=False)  # the store keeps slivers as JSON


def parses_or_refuses(doc: object) -> None:
    try:
        spec = parse_spec(doc)
    except SpecError:
        return
    assert_bounded(spec)
    assert len(limits.encode(doc)) <= limits.MAX_SPEC_BYTES  # what the CLI sends and the store keeps


@PROPERTY
@given(ANYTHING)
def test_any_value_parses_or_refuses(doc: object) -> None:
    parses_or_refuses(doc)


@PROPERTY
@given(SPEC_SHAPED)
def test_spec_shaped_documents_parse_bounded_or_refuse(doc: dict[str, Any]) -> None:
    parses_or_refuses(doc)




def _splice(text: str, at: int, noise: str) -> str:
    at = at % (len(text) + 1)
    return text[:at] + noise + text[at:]


#: A spec's lines in YAML, each key once, with a little noise spliced in somewhere (or none).
YAML_DOCS = st.builds(
    _splice,
    st.builds(
        lambda head, lines: head + "".join(line + "\n" for line in lines),
        st.sampled_from(["name: a\ndescription: d\n", "name: a\n", ""]),
        st.lists(FIELD_VALUES, max_size=6, unique_by=lambda line: line.split(":")[0]),
    ),
    st.integers(0, 10_000),
    st.integers(0, 3).flatmap(lambda n: st.just("") if n < 2 else st.lists(YAML_TOKENS, min_size=1, max_size=3).map("".join)),
)


@PROPERTY
@given(YAML_DOCS)
def test_yaml_ish_text_parses_bounded_or_refuses(text: str) -> None:
    try:
        spec = load_spec_text(text)
    except SpecError:
        return
    assert_bounded(spec)


def test_spec_shaped_documents_do_reach_success() -> None:
    """The strategy is useful only if some documents pass: check that one typical draw does."""
    doc = {"name": "a", "description": "d", "resources": {"cpu": "500m", "memory": "64Mi", "disk": "1Gi", "bandwidth": "10Mbit"}, "placement": {"locations": [{"near": {"lat": 1.0, "lon": 2.0}, "within_km": 5.0}]}}
    assert_bounded(parse_spec(doc))
