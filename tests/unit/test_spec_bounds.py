"""Hostile slice specs: every one is a clear field error, never a traceback (issue 9, part 3).

Each case first reproduced a crash or a silent acceptance: an OverflowError in the encoder, a
RecursionError in the YAML composer, NaN passing a range check, escape codes in a description.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from slices import limits
from slices.errors import SpecError
from slices.spec import SpecErrors, load_spec_text, parse_spec
from tests.unit.test_limits import largest_doc

pytestmark = pytest.mark.timeout(60)

MINIMAL: dict[str, Any] = {"name": "probe", "description": "a probe"}


def yaml_error(text: str) -> SpecError:
    with pytest.raises(SpecError) as err:
        load_spec_text(text, source="s.yaml")
    assert "\n" not in str(err.value)
    return err.value


def field_error(doc: dict[str, Any], path: str) -> str:
    with pytest.raises(SpecErrors) as err:
        parse_spec(doc)
    reasons = [r for p, r in err.value.errors if p == path]
    assert reasons, err.value.errors
    return reasons[0]


def spec(**fields: Any) -> dict[str, Any]:
    return {**MINIMAL, **fields}


# ---- numbers the wire or the kernel cannot carry -------------------------------------------


def test_a_bandwidth_beyond_tbf_is_refused_naming_the_limit() -> None:
    reason = field_error(spec(resources={"bandwidth": "99999999999999999999Gbit"}), "resources.bandwidth")
    assert "at most 32Gbit" in reason
    assert parse_spec(spec(resources={"bandwidth": "32Gbit"})).resources.bandwidth == 32 * 10**9
    assert "at most 32Gbit" in field_error(spec(resources={"bandwidth": "33Gbit"}), "resources.bandwidth")


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("cpu", 257, "at most 256 cores"),
        ("cpu", "0.0001", "at least 0.001 cores (1m)"),
        ("cpu", 10**400, "64 bits"),
        ("cpu", float("inf"), "finite"),
        ("memory", "17Ti", "at most 16Ti"),
        ("memory", "1Mi", "at least 4Mi"),
        ("memory", float("inf"), "finite"),
        ("memory", 2**70, "64 bits"),
        ("disk", "9Ti", "at most 8Ti"),
        ("disk", "1Mi", "at least 16Mi"),
        ("bandwidth", "0.5Kbit", "at least 1Kbit"),
    ],
)
def test_resources_are_bounded(key: str, value: object, words: str) -> None:
    path = "resources" if words in ("64 bits", "finite") else f"resources.{key}"
    with pytest.raises(SpecErrors) as err:
        parse_spec(spec(resources={key: value}))
    assert any(p.startswith(path) and words in r for p, r in err.value.errors), err.value.errors


def test_the_largest_values_are_accepted() -> None:
    s = parse_spec(spec(lifetime="56d", resources={"cpu": 256, "memory": "16Ti", "disk": "8Ti", "bandwidth": "32Gbit"}))
    assert (s.resources.cpu, s.resources.memory, s.resources.disk, s.lifetime) == (256.0, 16 * 1024**4, 8 * 1024**4, 56 * 86400)


def test_a_lifetime_past_the_maximum_names_it() -> None:
    assert "at most 56d" in field_error(spec(lifetime="99999999999999999999d"), "lifetime")
    assert "too long" in field_error(spec(lifetime="9" * 5000 + "d"), "lifetime")


@pytest.mark.parametrize(
    ("text", "path", "words"),
    [
        ("resources: {memory: .inf}", "resources.memory", "not a finite number"),
        ("resources: {cpu: -.inf}", "resources.cpu", "not a finite number"),
        ("resources: {cpu: 1.0e+400}", "resources.cpu", "not a finite number"),
        (f"resources: {{cpu: {'9' * 400}}}", "resources.cpu", "too long"),
        (f"resources: {{cpu: {'9' * 5000}}}", "resources.cpu", "too long"),
        ("env: {N: 18446744073709551617}", "env.N", "does not fit in 64 bits"),
        ("env: {N: 0x10000000000000000}", "env.N", "does not fit in 64 bits"),
        ("placement: {min_distance_km: .nan}", "placement.min_distance_km", "not a finite number"),
        ("placement: {locations: [{near: {lat: .nan, lon: 0}, within_km: 5}]}", "placement.locations[0].near.lat", "not a finite number"),
        ("env: {B: !!binary aGk=}", "env.B", "!!binary is not accepted"),
        ("env: {S: !!set {a}}", "env.S", "!!set is not accepted"),
    ],
)
def test_yaml_numbers_out_of_range_are_refused_at_their_line_with_the_path(text: str, path: str, words: str) -> None:
    err = yaml_error(f"name: a\ndescription: d\n{text}\n")
    assert err.path == path and words in err.reason and "s.yaml, line 3" in err.reason


@pytest.mark.parametrize(
    ("doc", "path"),
    [
        (spec(placement={"min_distance_km": float("nan")}), "placement.min_distance_km"),
        (spec(placement={"locations": [{"near": {"lat": float("nan"), "lon": 0}, "within_km": 5}]}), "placement.locations[0].near.lat"),
        (spec(placement={"locations": [{"near": {"lat": 0, "lon": 0}, "within_km": float("inf")}]}), "placement.locations[0].within_km"),
        (spec(env={"N": 2**64 + 1}), "env.N"),
    ],
)
def test_nan_inf_and_huge_numbers_from_the_wire_are_refused_by_path(doc: dict[str, Any], path: str) -> None:
    field_error(doc, path)


def test_a_cpu_written_as_text_must_be_finite_too() -> None:
    assert "not a finite number" in field_error(spec(resources={"cpu": "1e400"}), "resources.cpu")
    assert "not a finite number" in field_error(spec(resources={"cpu": "nan"}), "resources.cpu")


def test_a_date_stays_text() -> None:
    assert parse_spec(load_spec_text_doc("env: {START: 2024-01-01}")).env["START"] == "2024-01-01"


def load_spec_text_doc(extra: str) -> Any:
    from slices.yamlio import load_yaml

    return load_yaml(f"name: a\ndescription: d\n{extra}\n")


# ---- nesting and size ----------------------------------------------------------------------


def test_deep_yaml_is_refused_before_python_recursion() -> None:
    err = yaml_error("name: a\ndescription: " + "[" * 100_000 + "]" * 100_000 + "\n")
    assert f"nested more than {limits.MAX_DEPTH} levels deep" in err.reason and err.path.startswith("description[0]")
    err = yaml_error("name: a\ndescription: d\nenv:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 200)))
    assert "levels deep" in err.reason


def test_a_yaml_billion_laughs_is_refused_quickly() -> None:
    lines = ["name: a", "description: d", 'l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"l{i}: &l{i} [{','.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 10)]
    t0 = time.monotonic()
    err = yaml_error("\n".join(lines) + "\n")
    assert f"more than {limits.MAX_VALUES} values" in err.reason
    assert time.monotonic() - t0 < 5


def test_a_recursive_alias_is_refused() -> None:
    assert "levels deep" in yaml_error("name: a\ndescription: d\ncommand: &c [x, *c]\n").reason
    assert "recursive" in yaml_error("name: a\ndescription: d\nenv: &e {A: *e}\n").reason  # PyYAML's own refusal


def test_a_50_mb_spec_is_refused_at_once_naming_the_limit() -> None:
    t0 = time.monotonic()
    err = yaml_error("name: a\ndescription: d\n#" + "x" * (50 * 1024**2) + "\n")
    assert "512 KiB" in err.reason
    assert time.monotonic() - t0 < 2


@pytest.mark.parametrize(
    ("fields", "path", "words"),
    [
        ({"command": ["x"] * 129}, "command", "129 arguments, more than the 128"),
        ({"command": "x" * 5000}, "command", "more than the 4 KiB"),
        ({"command": "x" * 2_000_000}, "", "128 KiB"),  # a 2 MB command is over the whole-spec cap first
        ({"command": ["sh", "a\x00b"]}, "command[1]", "NUL"),
        ({"command": "a\x00b"}, "command", "NUL"),
        ({"env": {f"V{i}": "x" for i in range(65)}}, "env", "65 variables, more than the 64"),
        ({"env": {"BIG": "x" * 5000}}, "env", "more than the 4 KiB"),
        ({"env": {"Z": "a\x00"}}, "env.Z", "NUL"),
        ({"description": "d" * 1001}, "description", "1001 characters, more than the 1000"),
        ({"placement": {"locations": [{"region": "asia"}] * 501}}, "placement.locations", "501 entries, more than the 500"),
        ({"placement": {"exclude": {"nodes": [f"n{i}" for i in range(1001)]}}}, "placement.exclude.nodes", "more than the 1000"),
        ({"placement": {"locations": [{"site": "s" * 201}]}}, "placement.locations[0].site", "more than the 200"),
        ({"placement": {"locations": [{"region": "asia", "count": 100_000}, {"region": "asia", "count": 2}]}}, "placement", "more than the 100000"),
    ],
)
def test_sizes_are_capped_naming_the_limit(fields: dict[str, Any], path: str, words: str) -> None:
    assert words in field_error(spec(**fields), path)


def test_a_spec_over_the_encoded_size_cap_is_refused() -> None:
    names = [f"node-{i:04d}-" + "x" * 180 for i in range(1000)]
    doc = spec(placement={"exclude": {"nodes": names}})
    assert "128 KiB" in field_error(doc, "")


def test_limits_leave_room_for_a_real_spec() -> None:
    s = parse_spec(largest_doc())
    assert s.placement.count == limits.MAX_COUNT and len(s.env) == limits.MAX_ENV_VARS


def test_many_errors_are_counted_not_all_listed() -> None:
    with pytest.raises(SpecErrors) as err:
        parse_spec(spec(placement={"exclude": {"nodes": [""] * 50}}))
    assert len(err.value.errors) == 50
    assert str(err.value).count("must not be empty") == limits.MAX_REPORTED and "and 30 more problems" in str(err.value)


# ---- free text -----------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["\x1b[31mred\x1b[0m", "a\nb", "tab\there", "bell\x07", "\x9b31m", "rtl \u202e override", "del\x7f", "\ud800"])
def test_control_characters_in_a_description_are_refused(bad: str) -> None:
    with pytest.raises(SpecErrors) as err:
        parse_spec(spec(description=bad))
    [(path, reason)] = err.value.errors
    assert path == "description" and ("U+" in reason or "surrogate" in reason)


def test_a_key_with_a_lone_surrogate_is_refused_with_its_escape() -> None:
    """Found by the YAML property test (CI-53): a double-quoted ``"\\ud800"`` key reached the
    wire encoder and raised UnicodeEncodeError instead of a spec error."""
    text = 'name: a\ndescription: d\nresources: {"\\ud800", bandwidth: 99999999999999999999Gbit}\n'
    with pytest.raises(SpecErrors) as err:
        load_spec_text(text)
    [(path, reason)] = err.value.errors
    assert path == "resources.\\ud800" and "lone surrogate" in reason
    str(err.value).encode("utf-8")  # printable


def test_a_description_of_ordinary_unicode_is_kept() -> None:
    text = "Mesures de latence — 東京 ↔ São Paulo 👩‍🔬"
    assert parse_spec(spec(description=text)).description == text


@pytest.mark.parametrize(
    ("placement", "path"),
    [
        ({"locations": [{"site": "mit\x1b]0;pwned\x07"}]}, "placement.locations[0].site"),
        ({"locations": [{"city": "Paris\r"}]}, "placement.locations[0].city"),
        ({"exclude": {"sites": ["ok", "bad\x1b[2J"]}}, "placement.exclude.sites[1]"),
        ({"exclude": {"nodes": ["n\u2066"]}}, "placement.exclude.nodes[0]"),
    ],
)
def test_control_characters_in_location_and_exclude_names_are_refused(placement: dict[str, Any], path: str) -> None:
    assert "U+" in field_error(spec(placement=placement), path)


def test_command_and_env_are_program_data_and_keep_newlines() -> None:
    s = parse_spec(spec(command="set -e\nwhile true; do date; sleep 5; done\n", env={"PEM": "-----BEGIN-----\nabc\n"}))
    assert s.command is not None and "\n" in s.command[2] and "\n" in s.env["PEM"]


def test_a_complex_key_is_refused() -> None:
    assert "cannot be a key" in yaml_error("? name: a\n").reason  # once a TypeError in the duplicate-key check
    assert "cannot be a key" in yaml_error("name: a\ndescription: d\nenv: {? [a, b] : c}\n").reason


def test_a_folded_description_must_drop_its_final_newline() -> None:
    assert "U+000A" in yaml_error_or_field("name: a\ndescription: >\n  long\n  text\n")
    assert load_spec_text("name: a\ndescription: >-\n  long\n  text\n").description == "long text"


def yaml_error_or_field(text: str) -> str:
    with pytest.raises(SpecError) as err:
        load_spec_text(text)
    return str(err.value)
