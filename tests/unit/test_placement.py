"""controller/placement.py: every constraint holds for every placed sliver; refusals explain."""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

import pytest
from placement_cases import (
    CATALOGUE,
    Gi,
    Mi,
    assert_unchanged,
    at,
    check_plan,
    check_refusal,
    matches,
    nv,
    random_cluster,
    random_spec,
    snapshot,
    spec_of,
)

from controller.placement import NodeIndex, NodeView, Plan, Refusal, place
from slices.model import Resources
from slices.spec import SliceSpec


def test_random_specs_on_random_clusters_respect_every_constraint() -> None:
    rng = random.Random(20240601)
    outcomes = {"plan": 0, "partial": 0, "refusal": 0}
    for _ in range(200):
        nodes = random_cluster(rng)
        index = NodeIndex(nodes)
        spec = random_spec(rng, nodes)
        before = snapshot(index)
        result = place(spec, index, explain=rng.random() < 0.5)
        assert_unchanged(before, index)
        if isinstance(result, Plan):
            check_plan(spec, nodes, result)
            outcomes["partial" if result.partial else "plan"] += 1
        else:
            assert isinstance(result, Refusal)
            check_refusal(spec, nodes, result)
            outcomes["refusal"] += 1
        assert place(spec, index) == place(spec, index)
    # the generator must exercise both outcomes, or the checks above prove little
    assert outcomes["plan"] >= 30, outcomes
    assert outcomes["refusal"] >= 30, outcomes


def test_explain_reports_agree_with_refusal_reports() -> None:
    rng = random.Random(7)
    for _ in range(100):
        nodes = random_cluster(rng)
        index = NodeIndex(nodes)
        spec = random_spec(rng, nodes)
        quiet, loud = place(spec, index), place(spec, index, explain=True)
        assert type(quiet) is type(loud)
        if isinstance(quiet, Plan):
            assert isinstance(loud, Plan)
            assert quiet.reports == ()
            assert quiet.assignments == loud.assignments
            assert len(loud.reports) == len(spec.placement.requests())
            assert sum(r.placed for r in loud.reports) == len(loud.assignments)
        else:
            assert quiet == loud


# ---- determinism --------------------------------------------------------------------------


def test_same_input_same_plan_whatever_the_node_order() -> None:
    rng = random.Random(99)
    checked = 0
    for _ in range(40):
        nodes = random_cluster(rng)
        spec = random_spec(rng, nodes)
        first = place(spec, NodeIndex(nodes))
        shuffled = list(nodes)
        rng.shuffle(shuffled)
        assert place(spec, NodeIndex(shuffled)) == first
        assert place(spec, NodeIndex(reversed(nodes))) == first
        checked += isinstance(first, Plan)
    assert checked > 5


def test_ties_break_by_node_name() -> None:
    nodes = [nv(name) for name in ("n3", "n1", "n2")]
    plan = place(spec_of(count=1), NodeIndex(nodes))
    assert isinstance(plan, Plan)
    assert [a.node for a in plan.assignments] == ["n1"]


# ---- soft preferences ---------------------------------------------------------------------


def test_least_loaded_node_is_preferred() -> None:
    nodes = [nv("a", used_cpu=3.0), nv("b", used_cpu=1.0), nv("c", used_cpu=2.0), nv("d", used_memory=7 * Gi)]
    plan = place(spec_of(count=1, resources={"cpu": 0.5, "memory": "64Mi"}), NodeIndex(nodes))
    assert isinstance(plan, Plan)
    assert [a.node for a in plan.assignments] == ["b"]
    plan2 = place(spec_of(count=2, resources={"cpu": 0.5, "memory": "64Mi"}), NodeIndex(nodes))
    assert isinstance(plan2, Plan)
    assert [a.node for a in plan2.assignments] == ["b", "c"]


def test_load_is_relative_to_capacity() -> None:
    nodes = [nv("big", cpu=16.0, used_cpu=4.0), nv("small", cpu=2.0, used_cpu=0.5)]
    plan = place(spec_of(count=1, resources={"cpu": 1, "memory": "64Mi"}), NodeIndex(nodes))
    assert isinstance(plan, Plan)
    assert plan.assignments[0].node == "big"  # 5/16 < 1.5/2


def test_spread_preference_beats_load() -> None:
    nodes = [
        nv("eu1", country="DE", region="europe"),
        nv("eu2", country="FR", region="europe"),
        nv("eu3", country="NL", region="europe"),
        nv("as1", country="JP", region="asia", used_cpu=3.0),
    ]
    without = place(spec_of(count=2), NodeIndex(nodes))
    assert isinstance(without, Plan)
    assert {a.node for a in without.assignments} == {"eu1", "eu2"}
    spread = place(spec_of(count=2, spread="region"), NodeIndex(nodes))
    assert isinstance(spread, Plan)
    assert {a.node for a in spread.assignments} == {"eu1", "as1"}


def test_spread_evenly_over_countries() -> None:
    nodes = [nv(f"{c}{i}", country=c, region="europe") for c in ("DE", "FR") for i in range(4)]
    plan = place(spec_of(count=4, distinct="none", spread="country"), NodeIndex(nodes))
    assert isinstance(plan, Plan)
    countries = [n[:2] for n in (a.node for a in plan.assignments)]
    assert countries.count("DE") == countries.count("FR") == 2


# ---- hard constraints, case by case -------------------------------------------------------


def test_most_constrained_request_first() -> None:
    # the only DE node is also the least loaded European node: serving "europe" first
    # in the order written would take it and leave the country DE request unmet.
    nodes = [
        nv("de1", country="DE", region="europe"),
        nv("fr1", country="FR", region="europe", used_cpu=1.0),
        nv("nl1", country="NL", region="europe", used_cpu=2.0),
        nv("us1", country="US", region="north-america"),
    ]
    spec = spec_of(locations=[{"region": "europe", "count": 2}, {"country": "DE"}])
    plan = place(spec, NodeIndex(nodes))
    assert isinstance(plan, Plan), plan
    got = {(a.request, a.node) for a in plan.assignments}
    assert got == {(0, "fr1"), (0, "nl1"), (1, "de1")}
    check_plan(spec, nodes, plan)


def test_city_match_is_case_insensitive() -> None:
    nodes = [nv("a", city="Zurich"), nv("b", city="Geneva")]
    plan = place(spec_of(locations=[{"city": "zURICH"}]), NodeIndex(nodes))
    assert isinstance(plan, Plan)
    assert [a.node for a in plan.assignments] == ["a"]


def test_near_within_km_boundary() -> None:
    # nodes on the equator 1 degree apart (about 111.2 km)
    nodes = [nv(f"n{i}", lat=0.0, lon=float(i)) for i in range(5)]
    plan = place(spec_of(distinct="none", locations=[{"near": {"lat": 0, "lon": 0}, "within_km": 250, "count": 3}]), NodeIndex(nodes))
    assert isinstance(plan, Plan)
    assert {a.node for a in plan.assignments} == {"n0", "n1", "n2"}
    refused = place(spec_of(distinct="none", locations=[{"near": {"lat": 0, "lon": 0}, "within_km": 250, "count": 4}]), NodeIndex(nodes))
    assert isinstance(refused, Refusal)
    assert "placement.locations[0] (near (0, 0) within 250 km) wants 4: 3 nodes match" in refused.reason


def test_min_distance_is_great_circle() -> None:
    nodes = [nv(f"n{i}", lat=0.0, lon=float(i)) for i in range(6)]  # 111.2 km steps
    packed = spec_of(count=3, min_distance_km=200, spread="none")  # the nearest that are allowed
    plan = place(packed, NodeIndex(nodes))
    assert isinstance(plan, Plan)
    check_plan(packed, nodes, plan)
    assert {a.node for a in plan.assignments} == {"n0", "n2", "n4"}
    spread = spec_of(count=3, min_distance_km=200)  # the default: farthest first, equal distances by name
    plan = place(spread, NodeIndex(nodes))
    assert isinstance(plan, Plan)
    check_plan(spread, nodes, plan)
    assert [a.node for a in plan.assignments] == ["n0", "n5", "n2"]


def test_one_sliver_per_node_even_without_distinct() -> None:
    nodes = [nv("a", site="s"), nv("b", site="s")]
    assert isinstance(place(spec_of(count=2, distinct="none"), NodeIndex(nodes)), Plan)
    refused = place(spec_of(count=3, distinct="none"), NodeIndex(nodes))
    assert isinstance(refused, Refusal)
    assert "taken by the slice's other slivers" in refused.reason


def test_min_count_accepts_a_partial_slice() -> None:
    nodes = [nv("a"), nv("b"), nv("c", up=False)]
    spec = spec_of(count=4, min_count=2)
    plan = place(spec, NodeIndex(nodes))
    assert isinstance(plan, Plan)
    assert plan.partial and plan.wanted == 4
    assert {a.node for a in plan.assignments} == {"a", "b"}
    check_plan(spec, nodes, plan)
    refused = place(spec_of(count=4, min_count=3), NodeIndex(nodes))
    assert isinstance(refused, Refusal)
    assert "cannot place 4 slivers (min_count 3): only 2 fit" in refused.reason


def test_charge_and_set_up_are_seen_by_the_next_placement() -> None:
    index = NodeIndex([nv("a", cpu=1.0), nv("b", cpu=1.0, used_cpu=0.5)])
    spec = spec_of(count=1, resources={"cpu": 1, "memory": "64Mi"})
    plan = place(spec, index)
    assert isinstance(plan, Plan) and plan.assignments[0].node == "a"
    index.charge("a", Resources(1.0, 64 * Mi, 0))
    assert isinstance(place(spec, index), Refusal)
    index.charge("a", Resources(1.0, 64 * Mi, 0), sign=-1)
    index.set_up("a", False)
    refused = place(spec, index)
    assert isinstance(refused, Refusal) and "1 down" in refused.reason


# ---- refusals explain themselves ----------------------------------------------------------


def three(**kw: Any) -> list[NodeView]:
    return [nv("n1", **kw), nv("n2", **kw), nv("n3", **kw)]


@pytest.mark.parametrize(
    ("nodes", "spec", "phrase"),
    [
        (three(up=False), spec_of(count=1), "3 down"),
        (three(kinds=("container",)), spec_of(count=1, isolation="vm"), "3 offer no vm isolation"),
        (three(images=("alpine",)), spec_of(count=1), "3 lack image 'busybox'"),
        (three(), spec_of(count=1, exclude={"nodes": ["n1", "n2", "n3"]}), "3 excluded"),
        (three(country="DE"), spec_of(count=1, exclude={"countries": ["DE"]}), "3 excluded"),
        (three(cpu=1.0, used_cpu=0.75), spec_of(count=1, resources={"cpu": 0.5}), "3 lack free cpu (0.5 cores)"),
        (three(memory=1 * Gi, used_memory=900 * Mi), spec_of(count=1, resources={"memory": "256Mi"}), "3 lack free memory (256Mi)"),
        (three(disk=10 * Gi), spec_of(count=1, resources={"disk": "20Gi"}), "3 lack free disk (20Gi)"),
    ],
)
def test_infeasible_static_constraint_is_named(nodes: list[NodeView], spec: SliceSpec, phrase: str) -> None:
    index = NodeIndex(nodes)
    before = snapshot(index)
    refused = place(spec, index)
    assert isinstance(refused, Refusal), refused
    assert "cannot place 1 slivers: only 0 fit" in refused.reason
    assert "placement.count (anywhere) wants 1: 3 nodes match" in refused.reason
    assert phrase in refused.reason
    assert "0 left" in refused.reason
    check_refusal(spec, nodes, refused)
    assert_unchanged(before, index)


def test_removed_counts_are_attributed_in_order() -> None:
    nodes = [nv("d", up=False, images=()), nv("i", images=("alpine",)), nv("ok")]
    refused = place(spec_of(count=2), NodeIndex(nodes))
    assert isinstance(refused, Refusal)
    (rep,) = refused.reports
    removed = dict(rep.removed)
    assert removed["down"] == 1
    assert removed["lack image 'busybox'"] == 1  # the down node is not counted twice
    assert rep.candidates == 1 and rep.placed == 1


def test_distinct_too_strict() -> None:
    nodes = [nv("a", site="mit"), nv("b", site="mit"), nv("c", site="mit")]
    refused = place(spec_of(count=2), NodeIndex(nodes))
    assert isinstance(refused, Refusal)
    assert "share a site with the slice's other slivers (distinct: site)" in refused.reason
    assert "placed 1" in refused.reason
    country = place(spec_of(count=2, distinct="country"), NodeIndex([nv("a", country="DE"), nv("b", country="DE")]))
    assert isinstance(country, Refusal) and "distinct: country" in country.reason


def test_min_distance_too_large() -> None:
    nodes = [nv("a", lat=0, lon=0), nv("b", lat=0, lon=10), nv("c", lat=0, lon=20)]  # 1112 km apart
    refused = place(spec_of(count=2, min_distance_km=5000), NodeIndex(nodes))
    assert isinstance(refused, Refusal)
    assert "closer to the slice's other slivers than min_distance_km (5000)" in refused.reason
    ok = place(spec_of(count=2, min_distance_km=2000), NodeIndex(nodes))
    assert isinstance(ok, Plan) and {a.node for a in ok.assignments} == {"a", "c"}


def test_refusal_names_the_request_that_failed() -> None:
    nodes = [nv("de1", country="DE", region="europe"), nv("us1", country="US"), nv("us2", country="US")]
    refused = place(spec_of(locations=[{"country": "US", "count": 2}, {"country": "JP"}]), NodeIndex(nodes))
    assert isinstance(refused, Refusal)
    assert "placement.locations[1] (country JP) wants 1: 0 nodes match" in refused.reason
    assert "placement.locations[0]" not in refused.reason  # it was met
    assert [r.placed for r in refused.reports] == [2, 0]


def test_unknown_site_city_country_match_nothing() -> None:
    nodes = [nv("a")]
    for loc in ({"site": "nowhere"}, {"city": "Atlantis"}, {"country": "JP"}, {"region": "africa"}):
        refused = place(spec_of(locations=[loc]), NodeIndex(nodes))
        assert isinstance(refused, Refusal)
        assert refused.reports[0].matched == 0


def test_explain_fills_reports_on_success() -> None:
    nodes = [nv("a", country="DE", region="europe"), nv("b", up=False), nv("c")]
    spec = spec_of(count=2, locations=[{"region": "europe"}])
    quiet = place(spec, NodeIndex(nodes))
    loud = place(spec, NodeIndex(nodes), explain=True)
    assert isinstance(quiet, Plan) and isinstance(loud, Plan)
    assert quiet.reports == ()
    assert [r.path for r in loud.reports] == ["placement.locations[0]", "placement.count"]
    assert [(r.wanted, r.placed, r.matched) for r in loud.reports] == [(1, 1, 1), (1, 1, 3)]
    assert dict(loud.reports[1].removed)["down"] == 1
    assert "wants 1: 1 nodes match" in loud.reports[0].text()


def test_empty_index_is_refused() -> None:
    refused = place(spec_of(count=1), NodeIndex([]))
    assert isinstance(refused, Refusal)
    assert "no nodes" in refused.reason


# ---- scale sanity -------------------------------------------------------------------------


def test_ten_thousand_nodes_place_fifty_slivers() -> None:
    rng = random.Random(10_000)
    nodes = []
    for i in range(10_000):
        s = CATALOGUE[i % len(CATALOGUE)]
        nodes.append(
            replace(
                at(s, f"node{i:05d}", used_cpu=rng.choice([0.0, 1.0, 2.0, 3.5]), up=rng.random() > 0.05),
                site=f"{s.name}-{i // len(CATALOGUE) % 40}",
                lat=max(-90.0, min(90.0, s.lat + rng.uniform(-1, 1))),
                lon=max(-180.0, min(180.0, s.lon + rng.uniform(-1, 1))),
            )
        )
    index = NodeIndex(nodes)
    spec = spec_of(
        count=50,
        locations=[{"region": "europe", "count": 10}, {"country": "JP", "count": 5}, {"near": {"lat": 40.35, "lon": -74.66}, "within_km": 500, "count": 5}],
        min_distance_km=20,
        spread="region",
        resources={"cpu": 0.5},
    )
    before = snapshot(index)
    plan = place(spec, index)
    assert isinstance(plan, Plan), plan
    check_plan(spec, nodes, plan)
    assert_unchanged(before, index)
    assert place(spec, index) == plan


def test_feasible_spec_is_not_refused_when_the_least_loaded_choice_blocks_a_later_request() -> None:
    """A valid placement exists (frankfurt + toulouse), so the slice must be placed.

    Request 0 (near Luxembourg) matches paris and frankfurt; request 1 (near the south of
    France) matches toulouse and marseille; distinct country. Taking paris for request 0
    because it is the least loaded leaves request 1 with only French nodes: a placer without
    backtracking refuses a feasible slice and explains it as infeasible.
    """
    nodes = [
        nv("paris", country="FR", region="europe", lat=48.8566, lon=2.3522),
        nv("frankfurt", country="DE", region="europe", lat=50.1109, lon=8.6821, used_cpu=2.0),
        nv("toulouse", country="FR", region="europe", lat=43.6047, lon=1.4442, used_cpu=1.0),
        nv("marseille", country="FR", region="europe", lat=43.2965, lon=5.3698, used_cpu=1.0),
    ]
    spec = spec_of(
        distinct="country",
        locations=[{"near": {"lat": 49.61, "lon": 6.13}, "within_km": 400}, {"near": {"lat": 43.5, "lon": 3.0}, "within_km": 300}],
    )
    reqs = spec.placement.requests()
    assert [n.name for n in nodes if matches(reqs[0], n)] == ["paris", "frankfurt"]
    assert [n.name for n in nodes if matches(reqs[1], n)] == ["toulouse", "marseille"]
    result = place(spec, NodeIndex(nodes))
    assert isinstance(result, Plan), f"feasible slice refused: {getattr(result, 'reason', result)}"
    check_plan(spec, nodes, result)


def test_charging_many_at_once_is_charging_each() -> None:
    """A slice's slivers charged (and released) in one vector operation per resource, a node
    named more than once charged as often, overhead included; unknown names are skipped."""
    vm = {"vm": Resources(cpu=0.1, memory=64 * 2**20)}
    nodes = [nv("a"), replace(nv("b"), overhead=vm), nv("c")]
    one, many = NodeIndex(nodes), NodeIndex(nodes)
    res = Resources(cpu=0.5, memory=2**28, disk=2**30)
    names = ["a", "b", "b", "gone", "c", "a", "a"]
    for kind in ("container", "vm"):
        for n in names:
            if n in one.pos:
                one.charge(n, res, isolation=kind)
        many.charge_many(names, res, isolation=kind)
        assert (one.usage == many.usage).all(), kind
    many.charge_many(names, res, -1, isolation="vm")
    many.charge_many(names, res, -1, isolation="container")
    assert (many.usage == NodeIndex(nodes).usage).all(), "released to what it was"


def test_a_big_placement_yields_between_chunks_and_plans_as_at_once() -> None:
    """``place_steps`` is ``place`` with a yield every ``SOLVE_CHUNK`` slivers placed: the
    controller's loop serves others between them, and the plan is the same."""
    from controller.placement import place_steps
    from controller.solver import SOLVE_CHUNK

    n = 2 * SOLVE_CHUNK + 7
    nodes = [nv(f"n{i:05d}", f"s{i % 40}", lat=(i % 170) - 85.0, lon=(i * 7 % 360) - 180.0) for i in range(n)]
    index = NodeIndex(nodes)
    spec = spec_of(count=n, distinct="none")
    gen = place_steps(spec, index)
    yields = 0
    while True:
        try:
            next(gen)
        except StopIteration as done:
            stepped = done.value
            break
        yields += 1
    assert yields == n // SOLVE_CHUNK
    assert isinstance(stepped, Plan) and stepped == place(spec, index)
    assert len({a.node for a in stepped.assignments}) == n
