"""slices/spec.py: the slice spec format of issue 2, section 4, and its error messages."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from slices.errors import SpecError
from slices.spec import (
    DEFAULT_LIFETIME,
    LocationRequest,
    SliceSpec,
    SpecErrors,
    load_spec_text,
    load_yaml,
    parse_spec,
)

Mi, Gi = 1024**2, 1024**3

EXAMPLE = """\
name: cdn-probe                  # required; ^[a-z][a-z0-9-]{0,62}$
description: CDN latency probes  # required
owner: alice                     # optional, defaults to the caller
lifetime: 14d                    # optional; default 14d, at most 56d; units m h d w
isolation: container             # container | vm ; default container
image: busybox                   # an image the chosen nodes offer; default busybox
command: [sh, -c, "while true; do date; sleep 5; done"]   # optional
env: {MODE: probe}               # optional
resources:                       # per sliver
  cpu: 0.5                       # cores; "500m" also accepted
  memory: 256Mi                  # Ki Mi Gi Ti, or plain bytes
  disk: 1Gi                      # optional
  bandwidth: 10Mbit              # optional; Kbit Mbit Gbit
placement:
  count: 6                       # total slivers; default: the sum of the locations' counts
  distinct: site                 # site | city | country | region | none ; default site
  locations:                     # optional; each asks for `count` (default 1) slivers matching it
    - {region: europe, count: 2}
    - {country: JP}
    - {site: princeton}
    - {near: {lat: 37.87, lon: -122.27}, within_km: 800, count: 2}
  exclude: {sites: [mit], countries: [], nodes: []}   # optional
  min_distance_km: 500           # optional, between every pair of slivers
  spread: region                 # optional soft preference: spread evenly over this attribute
  min_count: 4                   # optional; accept a partial slice of at least this many slivers
"""

MINIMAL: dict[str, Any] = {"name": "probe", "description": "a probe"}


def errors_of(doc: object) -> list[tuple[str, str]]:
    with pytest.raises(SpecErrors) as err:
        parse_spec(doc)
    assert isinstance(err.value, SpecError)
    assert err.value.code == "invalid-spec"
    return err.value.errors


def error_for(doc: object, path: str) -> str:
    """The reason given for ``path``; fails if no error names it."""
    errs = errors_of(doc)
    reasons = [r for p, r in errs if p == path]
    assert reasons, f"no error for {path!r} in {errs}"
    return reasons[0]


def with_placement(**placement: Any) -> dict[str, Any]:
    return {**MINIMAL, "placement": placement}


# ---- the example of the issue -------------------------------------------------------------


def test_full_example_parses_with_typed_values() -> None:
    spec = load_spec_text(EXAMPLE)
    assert isinstance(spec, SliceSpec)
    assert spec.name == "cdn-probe"
    assert spec.description == "CDN latency probes"
    assert spec.owner == "alice"
    assert spec.lifetime == 14 * 86400
    assert spec.isolation == "container"
    assert spec.image == "busybox"
    assert spec.command == ("sh", "-c", "while true; do date; sleep 5; done")
    assert dict(spec.env) == {"MODE": "probe"}
    r = spec.resources
    assert (r.cpu, r.memory, r.disk, r.bandwidth) == (0.5, 256 * Mi, Gi, 10_000_000)
    p = spec.placement
    assert p.count == 6
    assert p.distinct == "site"
    assert p.locations == (
        LocationRequest(kind="region", value="europe", count=2),
        LocationRequest(kind="country", value="JP", count=1),
        LocationRequest(kind="site", value="princeton", count=1),
        LocationRequest(kind="near", lat=37.87, lon=-122.27, within_km=800.0, count=2),
    )
    assert p.exclude.sites == frozenset({"mit"})
    assert p.exclude.countries == frozenset()
    assert p.exclude.nodes == frozenset()
    assert p.min_distance_km == 500.0
    assert p.spread == "region"
    assert p.min_count == 4
    # all locations sum to 6 = count: no "anywhere" remainder
    assert p.requests() == p.locations


def test_example_location_descriptions() -> None:
    locs = load_spec_text(EXAMPLE).placement.locations
    assert [loc.describe() for loc in locs] == ["region europe", "country JP", "site princeton", "near (37.87, -122.27) within 800 km"]


def test_requests_add_an_anywhere_remainder() -> None:
    spec = parse_spec(with_placement(count=5, locations=[{"region": "asia", "count": 2}]))
    reqs = spec.placement.requests()
    assert [r.kind for r in reqs] == ["region", "any"]
    assert reqs[1].count == 3
    assert reqs[1].describe() == "anywhere"


# ---- defaults -----------------------------------------------------------------------------


def test_defaults() -> None:
    spec = parse_spec(dict(MINIMAL))
    assert spec.lifetime == DEFAULT_LIFETIME == 14 * 86400
    assert spec.isolation == "container"
    assert spec.image == "busybox"
    assert spec.command is None
    assert dict(spec.env) == {}
    assert spec.owner is None
    assert spec.placement.distinct == "site"
    assert spec.placement.count == 1
    assert spec.placement.locations == ()
    assert spec.placement.min_count is None
    assert spec.placement.min_distance_km is None
    assert spec.placement.spread is None
    assert spec.resources.cpu > 0 and spec.resources.memory > 0
    assert spec.resources.disk == 1024**3 and spec.resources.bandwidth == 0  # 1Gi disk charged by default; unshaped


def test_count_defaults_to_sum_of_location_counts() -> None:
    spec = parse_spec(with_placement(locations=[{"region": "europe", "count": 2}, {"country": "JP"}, {"site": "mit", "count": 3}]))
    assert spec.placement.count == 6
    assert all(r.kind != "any" for r in spec.placement.requests())


def test_owner_defaults_to_caller_but_spec_wins() -> None:
    assert parse_spec(dict(MINIMAL), default_owner="bob").owner == "bob"
    assert parse_spec({**MINIMAL, "owner": "alice"}, default_owner="bob").owner == "alice"
    assert load_spec_text("name: a\ndescription: b\n", default_owner="carol").owner == "carol"


def test_lifetime_limits() -> None:
    assert parse_spec({**MINIMAL, "lifetime": "8w"}).lifetime == 56 * 86400
    assert parse_spec({**MINIMAL, "lifetime": "56d"}).lifetime == 56 * 86400
    assert parse_spec({**MINIMAL, "lifetime": "90m"}).lifetime == 5400
    reason = error_for({**MINIMAL, "lifetime": "57d"}, "lifetime")
    assert "56d" in reason
    assert "56d" in error_for({**MINIMAL, "lifetime": "9w"}, "lifetime")


def test_vm_isolation_and_other_image() -> None:
    spec = parse_spec({**MINIMAL, "isolation": "vm", "image": "debian-12"})
    assert (spec.isolation, spec.image) == ("vm", "debian-12")


def test_distinct_none_and_spread_values() -> None:
    for d in ("site", "city", "country", "region", "none"):
        assert parse_spec(with_placement(distinct=d)).placement.distinct == d
    for s in ("site", "city", "country", "region"):
        assert parse_spec(with_placement(spread=s)).placement.spread == s


def test_cpu_as_millicores_and_memory_as_bytes() -> None:
    spec = parse_spec({**MINIMAL, "resources": {"cpu": "500m", "memory": 64 * Mi}})
    assert spec.resources.cpu == 0.5
    assert spec.resources.memory == 64 * Mi


# ---- command and env ----------------------------------------------------------------------


def test_command_string_becomes_sh_c() -> None:
    spec = parse_spec({**MINIMAL, "command": "while true; do date; sleep 5; done"})
    assert spec.command == ("sh", "-c", "while true; do date; sleep 5; done")


def test_command_list_items_become_strings() -> None:
    assert parse_spec({**MINIMAL, "command": ["sleep", 5]}).command == ("sleep", "5")


@pytest.mark.parametrize("command", [[], 5, {"a": 1}, ["ok", None], ["ok", ["nested"]]])
def test_bad_command(command: object) -> None:
    errs = errors_of({**MINIMAL, "command": command})
    assert any(p.startswith("command") for p, _ in errs), errs


def test_env_values_become_strings() -> None:
    spec = load_spec_text("name: a\ndescription: b\nenv: {MODE: probe, N: 3, RATE: 0.5, DEBUG: true, ANSWER: no}\n")
    assert dict(spec.env) == {"MODE": "probe", "N": "3", "RATE": "0.5", "DEBUG": "true", "ANSWER": "no"}


@pytest.mark.parametrize(
    ("env", "path"), [({"1BAD": "x"}, "env.1BAD"), ({"A-B": "x"}, "env.A-B"), ({"OK": None}, "env.OK"), ({"OK": [1]}, "env.OK"), ({"OK": {"a": 1}}, "env.OK")]
)
def test_bad_env(env: dict[str, Any], path: str) -> None:
    assert error_for({**MINIMAL, "env": env}, path)


def test_env_not_a_mapping() -> None:
    assert "mapping" in error_for({**MINIMAL, "env": ["A=1"]}, "env")


# ---- unknown keys -------------------------------------------------------------------------


def test_unknown_top_level_key_with_did_you_mean() -> None:
    reason = error_for({**MINIMAL, "lifetme": "1d"}, "lifetme")
    assert "unknown key" in reason
    assert "lifetime" in reason


def test_unknown_top_level_key_without_close_match_lists_allowed() -> None:
    reason = error_for({**MINIMAL, "zzzzzz": 1}, "zzzzzz")
    assert "unknown key" in reason
    assert "name" in reason and "placement" in reason


@pytest.mark.parametrize(
    ("doc", "path", "hint"),
    [
        (with_placement(cuont=3), "placement.cuont", "count"),
        (with_placement(locations=[{"region": "asia", "cont": 2}]), "placement.locations[0].cont", "count"),
        (with_placement(locations=[{"near": {"lat": 1, "lon": 2}, "within_kms": 5}]), "placement.locations[0].within_kms", "within_km"),
        (with_placement(locations=[{"near": {"lat": 1, "lon": 2, "alt": 3}, "within_km": 5}]), "placement.locations[0].near.alt", None),
        (with_placement(exclude={"site": ["mit"]}), "placement.exclude.site", "sites"),
        ({**MINIMAL, "resources": {"cpus": 1}}, "resources.cpus", "cpu"),
        ({**MINIMAL, "resources": {"memroy": "1Gi"}}, "resources.memroy", "memory"),
    ],
)
def test_unknown_nested_keys(doc: dict[str, Any], path: str, hint: str | None) -> None:
    reason = error_for(doc, path)
    assert "unknown key" in reason
    if hint:
        assert repr(hint) in reason


# ---- names and required fields ------------------------------------------------------------


@pytest.mark.parametrize("name", ["../x", "a/b", "Upper", "a" * 64, "1abc", "-abc", "a b", "a_b", "", "é"])
def test_bad_names(name: str) -> None:
    reason = error_for({**MINIMAL, "name": name}, "name")
    assert repr(name) in reason


@pytest.mark.parametrize("name", ["a", "a" * 63, "cdn-probe", "x1-2"])
def test_good_names(name: str) -> None:
    assert parse_spec({**MINIMAL, "name": name}).name == name


def test_name_must_be_a_string() -> None:
    assert "string" in error_for({**MINIMAL, "name": 5}, "name")


@pytest.mark.parametrize("missing", ["name", "description"])
def test_missing_required(missing: str) -> None:
    doc = dict(MINIMAL)
    del doc[missing]
    assert error_for(doc, missing) == "required"


def test_empty_description() -> None:
    assert "empty" in error_for({**MINIMAL, "description": "   "}, "description")


@pytest.mark.parametrize("doc", [None, [], "name: x", 5])
def test_document_not_a_mapping(doc: object) -> None:
    errs = errors_of(doc)
    assert any("mapping" in r for _, r in errs)


# ---- units in the spec --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "path"),
    [
        ("lifetime", "14", "lifetime"),
        ("lifetime", "1y", "lifetime"),
        ("lifetime", "-1d", "lifetime"),
        ("lifetime", 0, "lifetime"),
        ("resources", {"cpu": 0}, "resources.cpu"),
        ("resources", {"cpu": "abc"}, "resources.cpu"),
        ("resources", {"memory": "256MB"}, "resources.memory"),
        ("resources", {"memory": "1Ki"}, "resources.memory"),
        ("resources", {"disk": "-1Gi"}, "resources.disk"),
        ("resources", {"bandwidth": "10mbps"}, "resources.bandwidth"),
        ("resources", {"bandwidth": 10}, "resources.bandwidth"),
        ("isolation", "jail", "isolation"),
        ("image", "Bad Image", "image"),
    ],
)
def test_bad_values_name_their_path(key: str, value: object, path: str) -> None:
    assert error_for({**MINIMAL, key: value}, path)


def test_memory_error_names_the_binary_suffixes() -> None:
    reason = error_for({**MINIMAL, "resources": {"memory": "256MB"}}, "resources.memory")
    for suffix in ("Ki", "Mi", "Gi", "Ti"):
        assert suffix in reason


# ---- placement.locations ------------------------------------------------------------------


def near(within: object = 100, **extra: Any) -> dict[str, Any]:
    return {"near": {"lat": 40.0, "lon": -74.0}, "within_km": within, **extra}


@pytest.mark.parametrize("within", [0, -5, -0.1, 20_101])
def test_within_km_range_with_exact_path(within: float) -> None:
    doc = with_placement(locations=[{"region": "europe"}, {"country": "JP"}, near(within)])
    with pytest.raises(SpecErrors) as err:
        parse_spec(doc)
    assert "placement.locations[2].within_km: must be > 0" in str(err.value)


def test_within_km_must_be_a_number() -> None:
    assert "number" in error_for(with_placement(locations=[near("far")]), "placement.locations[0].within_km")


def test_near_without_within_km() -> None:
    assert "required" in error_for(with_placement(locations=[{"near": {"lat": 1, "lon": 2}}]), "placement.locations[0].within_km")


def test_within_km_without_near() -> None:
    assert "near" in error_for(with_placement(locations=[{"region": "asia", "within_km": 100}]), "placement.locations[0].within_km")


@pytest.mark.parametrize(
    ("coords", "path"),
    [({"lat": 91, "lon": 0}, "near.lat"), ({"lat": 0, "lon": -181}, "near.lon"), ({"lat": "x", "lon": 0}, "near.lat"), ({"lon": 0}, "near.lat")],
)
def test_near_coordinates(coords: dict[str, Any], path: str) -> None:
    assert error_for(with_placement(locations=[{"near": coords, "within_km": 10}]), f"placement.locations[0].{path}")


def test_two_selectors_in_one_location() -> None:
    reason = error_for(with_placement(locations=[{"site": "mit"}, {"region": "asia", "country": "JP"}]), "placement.locations[1]")
    assert "exactly one" in reason
    assert "region" in reason and "country" in reason


def test_no_selector() -> None:
    reason = error_for(with_placement(locations=[{"count": 2}]), "placement.locations[0]")
    assert "exactly one" in reason


def test_location_not_a_mapping() -> None:
    assert "mapping" in error_for(with_placement(locations=["europe"]), "placement.locations[0]")


def test_locations_not_a_list() -> None:
    assert "list" in error_for(with_placement(locations={"region": "europe"}), "placement.locations")


def test_bad_region() -> None:
    reason = error_for(with_placement(locations=[{"region": "antarctica"}]), "placement.locations[0].region")
    assert "antarctica" in reason and "europe" in reason


@pytest.mark.parametrize("country", ["UK", "XX", "USA", 1])
def test_bad_country(country: object) -> None:
    reason = error_for(with_placement(locations=[{"country": country}]), "placement.locations[0].country")
    assert "ISO 3166" in reason


def test_lower_case_country_is_upper_cased() -> None:
    assert parse_spec(with_placement(locations=[{"country": "jp"}])).placement.locations[0].value == "JP"


@pytest.mark.parametrize("count", [0, -1, 1.5, "2", True])
def test_bad_location_count(count: object) -> None:
    assert error_for(with_placement(locations=[{"region": "asia", "count": count}]), "placement.locations[0].count")


@pytest.mark.parametrize("selector", ["site", "city"])
def test_empty_site_or_city(selector: str) -> None:
    assert error_for(with_placement(locations=[{selector: "  "}]), f"placement.locations[0].{selector}")


# ---- placement: counts, distinct, spread, distance, exclude ------------------------------


def test_count_less_than_locations_sum() -> None:
    reason = error_for(with_placement(count=2, locations=[{"region": "europe", "count": 2}, {"country": "JP"}]), "placement.count")
    assert "2" in reason and "3" in reason


def test_min_count_over_count() -> None:
    reason = error_for(with_placement(count=3, min_count=4), "placement.min_count")
    assert "4" in reason and "3" in reason


def test_min_count_over_default_count() -> None:
    assert error_for(with_placement(locations=[{"region": "asia"}], min_count=2), "placement.min_count")


@pytest.mark.parametrize("count", [0, -3, "6", 2.5, True, 100_001])
def test_bad_count(count: object) -> None:
    assert error_for(with_placement(count=count), "placement.count")


@pytest.mark.parametrize("value", ["continent", "host", True, 1, None, "Site"])
def test_bad_distinct(value: object) -> None:
    reason = error_for(with_placement(distinct=value), "placement.distinct")
    assert "site" in reason and "none" in reason


@pytest.mark.parametrize("value", ["geo", "continent", 3])
def test_bad_spread(value: object) -> None:
    assert error_for(with_placement(spread=value), "placement.spread")


def test_spread_none_asks_for_no_spreading() -> None:
    assert parse_spec(with_placement(spread="none")).placement.spread == "none"
    assert parse_spec(with_placement()).placement.spread is None  # the default: geographic


@pytest.mark.parametrize("value", [-1, "far", 20_101])
def test_bad_min_distance(value: object) -> None:
    assert error_for(with_placement(min_distance_km=value), "placement.min_distance_km")


def test_zero_min_distance_means_none() -> None:
    assert parse_spec(with_placement(min_distance_km=0)).placement.min_distance_km is None


def test_exclude_parses_and_upper_cases_countries() -> None:
    spec = parse_spec(with_placement(exclude={"sites": ["mit", "eth-zurich"], "countries": ["de", "US"], "nodes": ["n1"]}))
    ex = spec.placement.exclude
    assert ex.sites == {"mit", "eth-zurich"}
    assert ex.countries == {"DE", "US"}
    assert ex.nodes == {"n1"}


@pytest.mark.parametrize(
    ("exclude", "path"),
    [
        ({"sites": "mit"}, "placement.exclude.sites"),
        ({"sites": ["ok", 3]}, "placement.exclude.sites[1]"),
        ({"countries": ["XX"]}, "placement.exclude.countries[0]"),
        ({"nodes": [""]}, "placement.exclude.nodes[0]"),
        (["mit"], "placement.exclude"),
    ],
)
def test_bad_exclude(exclude: object, path: str) -> None:
    assert error_for(with_placement(exclude=exclude), path)


def test_several_errors_reported_together() -> None:
    doc = {
        "name": "Bad/Name",
        "descriptoin": "typo",
        "lifetime": "99d",
        "resources": {"cpu": -1, "memory": "1GB"},
        "placement": {"distinct": "planet", "locations": [{"region": "mars"}, near(0)], "min_count": 0},
    }
    errs = errors_of(doc)
    paths = {p for p, _ in errs}
    assert {
        "name",
        "descriptoin",
        "description",
        "lifetime",
        "resources.cpu",
        "resources.memory",
        "placement.distinct",
        "placement.locations[0].region",
        "placement.locations[1].within_km",
        "placement.min_count",
    } <= paths
    with pytest.raises(SpecErrors) as err:
        parse_spec(doc)
    message = str(err.value)
    for path in ("name:", "lifetime:", "resources.cpu:", "placement.locations[1].within_km:"):
        assert path in message


def test_parse_spec_does_not_mutate_the_document() -> None:
    doc = with_placement(count=3, locations=[{"country": "jp"}], exclude={"countries": ["de"]})
    before = copy.deepcopy(doc)
    parse_spec(doc)
    assert doc == before


# ---- YAML ---------------------------------------------------------------------------------


def test_malformed_yaml_mentions_line_and_column() -> None:
    with pytest.raises(SpecError) as err:
        load_spec_text("name: x\ndescription: [unclosed\nimage: busybox\n", source="my.yaml")
    message = str(err.value)
    assert "my.yaml" in message
    assert "line" in message and "column" in message
    assert "malformed YAML" in message


def test_malformed_yaml_position_is_right() -> None:
    with pytest.raises(SpecError, match=r"line 2, column 14"):
        load_yaml("name: x\n  description: d\n")


@pytest.mark.parametrize(
    "text",
    ["name: a\nname: b\ndescription: d\n", "name: a\ndescription: d\nplacement:\n  count: 1\n  count: 2\n", "name: a\ndescription: d\nenv: {A: 1, A: 2}\n"],
)
def test_duplicate_keys_are_rejected(text: str) -> None:
    with pytest.raises(SpecError, match=r"duplicate key"):
        load_spec_text(text)


def test_duplicate_key_error_names_its_line() -> None:
    with pytest.raises(SpecError, match=r"line 3"):
        load_yaml("a: 1\nb: 2\na: 3\n")


@pytest.mark.parametrize("word", ["NO", "no", "No"])
def test_country_no_is_norway(word: str) -> None:
    spec = load_spec_text(f"name: a\ndescription: d\nplacement:\n  locations:\n    - country: {word}\n  exclude: {{countries: [{word}]}}\n")
    assert spec.placement.locations[0].value == "NO"
    assert spec.placement.exclude.countries == {"NO"}


def test_yaml_yes_no_on_off_stay_strings_but_true_false_are_booleans() -> None:
    doc = load_yaml("a: yes\nb: no\nc: on\nd: off\ne: true\nf: False\n")
    assert doc == {"a": "yes", "b": "no", "c": "on", "d": "off", "e": True, "f": False}


def test_strict_loader_leaves_plain_yaml_alone() -> None:
    import yaml

    assert yaml.safe_load("country: NO") == {"country": False}  # the reason for the strict loader


def test_yaml_tags_are_not_executed() -> None:
    with pytest.raises(SpecError):
        load_spec_text("name: !!python/object/apply:os.system ['true']\ndescription: d\n")


def test_empty_document() -> None:
    with pytest.raises(SpecError):
        load_spec_text("")


def test_load_spec_text_round_trip() -> None:
    import yaml

    spec = load_spec_text(EXAMPLE)
    doc = yaml.safe_load(EXAMPLE)
    assert parse_spec(doc) == spec
    # dumping the document again and reading it back gives the same typed spec
    again = load_spec_text(yaml.safe_dump(doc, sort_keys=False))
    assert again == spec


def test_spec_errors_is_a_spec_error_with_all_reasons() -> None:
    with pytest.raises(SpecError) as err:
        load_spec_text("name: A\ndescription: d\nlifetime: 1y\n")
    assert isinstance(err.value, SpecErrors)
    assert len(err.value.errors) == 2
