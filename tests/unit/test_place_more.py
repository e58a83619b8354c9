"""controller/placement.py place_more: slivers placed again beside a slice's slivers that stay;
nodes cordoned or draining; per-kind overhead on capacity and charging."""

from __future__ import annotations

import random
from dataclasses import replace

import numpy as np
import pytest
from placement_cases import Gi, Mi, assert_unchanged, check_plan, nv, random_cluster, random_spec, snapshot, spec_of, static_failures

from controller.placement import NodeIndex, NodeView, Plan, Refusal, node_view, place, place_more, sliver_cost
from controller.solver import static_filters, static_ok
from slices.model import Location, NodeInfo, Resources


def four_sites() -> list[NodeView]:
    """Sites a-d with two machines each, 1,000 km apart on the equator."""
    return [nv(f"{s}{m}", site=s, city=s.upper(), lat=0.0, lon=9.0 * i) for i, s in enumerate("abcd") for m in (1, 2)]


# ---- placing beside the slivers that stay -------------------------------------------------


def test_new_sliver_keeps_distinct_with_the_existing_ones() -> None:
    nodes = four_sites()
    spec = spec_of(count=3)
    index = NodeIndex(nodes)
    existing = [(0, "a1"), (0, "b2")]
    before = snapshot(index)
    plan = place_more(spec, index, existing, [0])
    assert isinstance(plan, Plan), plan
    assert len(plan.assignments) == 1 and plan.wanted == 1
    assert plan.assignments[0].node[0] in "cd"  # sites a and b hold the slice's other slivers
    check_plan(spec, nodes, plan, existing, wanted=1)
    assert_unchanged(before, index)
    assert place_more(spec, index, existing, [0]) == plan


def test_new_sliver_keeps_min_distance_from_the_existing_ones() -> None:
    nodes = [nv(f"n{i}", lat=0.0, lon=float(i)) for i in range(4)]  # 111 km apart
    spec = spec_of(count=2, min_distance_km=200, spread="none")
    plan = place_more(spec, NodeIndex(nodes), [(0, "n1")], [0])
    assert isinstance(plan, Plan)
    assert [a.node for a in plan.assignments] == ["n3"]  # n0 and n2 are 111 km from n1
    refused = place_more(spec, NodeIndex(nodes[:3]), [(0, "n1")], [0])
    assert isinstance(refused, Refusal)
    assert "2 closer to the slice's other slivers than min_distance_km (200)" in refused.reason


def test_one_sliver_per_node_counts_the_existing_ones() -> None:
    nodes = [nv("a", site="s"), nv("b", site="s")]
    spec = spec_of(count=2, distinct="none")
    plan = place_more(spec, NodeIndex(nodes), [(0, "a")], [0])
    assert isinstance(plan, Plan) and [a.node for a in plan.assignments] == ["b"]
    refused = place_more(spec, NodeIndex(nodes), [(0, "a")], [0], avoid={"b"})
    assert isinstance(refused, Refusal)
    assert "1 avoided (being vacated)" in refused.reason
    assert "1 taken by the slice's other slivers" in refused.reason


def test_avoided_node_is_not_chosen_even_when_it_is_best() -> None:
    nodes = [nv("failed"), nv("busy", used_cpu=3.0)]
    spec = spec_of(count=1)
    assert [a.node for a in place(spec, NodeIndex(nodes)).assignments] == ["failed"]  # type: ignore[union-attr]
    plan = place_more(spec, NodeIndex(nodes), [], [0], avoid=["failed", "not-a-node"])
    assert isinstance(plan, Plan) and [a.node for a in plan.assignments] == ["busy"]


def test_refusal_names_what_the_existing_slivers_cost() -> None:
    nodes = [*four_sites(), nv("a3", site="a", city="A"), nv("e1", site="e", up=False)]
    spec = spec_of(count=5)
    existing = [(0, "a1"), (0, "b1"), (0, "c1"), (0, "d1")]
    refused = place_more(spec, NodeIndex(nodes), existing, [0])
    assert isinstance(refused, Refusal)
    assert refused.reason.startswith("cannot place 1 more slivers beside the slice's 4: only 0 fit; ")
    assert "placement.count (anywhere) wants 1: 10 nodes match; 1 down; 9 left" in refused.reason
    assert "placed 0 (4 taken by the slice's other slivers, 5 share a site with the slice's other slivers (distinct: site))" in refused.reason
    (rep,) = refused.reports
    assert dict(rep.conflicts) == {
        "taken by the slice's other slivers": 4,
        "share a site with the slice's other slivers (distinct: site)": 5,
        "closer to the slice's other slivers than min_distance_km (0)": 0,
    }


def test_min_count_lets_the_slice_shrink_to_it() -> None:
    nodes = four_sites()[:6]  # sites a, b, c
    existing = [(0, "a1"), (0, "b1"), (0, "c1")]
    plan = place_more(spec_of(count=4, min_count=3), NodeIndex(nodes), existing, [0])
    assert isinstance(plan, Plan) and plan.assignments == () and plan.partial and plan.wanted == 1
    refused = place_more(spec_of(count=4, min_count=4), NodeIndex(nodes), existing, [0])
    assert isinstance(refused, Refusal) and "(min_count 4)" in refused.reason
    two = place_more(spec_of(count=5, min_count=4), NodeIndex(nodes), [(0, "a1"), (0, "b1"), (0, "c1")], [0, 0])
    assert isinstance(two, Refusal)  # 3 + 0 < 4


def test_requests_keep_their_own_locations() -> None:
    nodes = [*four_sites(), nv("jp1", country="JP", region="asia", lat=35.7, lon=139.7), nv("jp2", site="jp2", country="JP", region="asia", lat=34.7, lon=135.5)]
    spec = spec_of(count=3, locations=[{"country": "JP", "count": 2}])
    plan = place_more(spec, NodeIndex(nodes), [(0, "jp1"), (1, "a1")], [0])
    assert isinstance(plan, Plan) and [(a.request, a.node) for a in plan.assignments] == [(0, "jp2")]


@pytest.mark.parametrize(
    ("existing", "wanted", "message"),
    [
        ([(2, "a1")], [0], "existing: request index 2 is out of range"),
        ([], [-1], "wanted: request index -1 is out of range"),
        ([(0, "zz")], [0], "no such node in the index"),
        ([(0, "a1"), (1, "a1")], [0], "two existing slivers on one node"),
        ([(0, "a1")], [0, 0], "request 0 (country US) asks for 2 slivers: 1 exist and 2 more are wanted"),
    ],
)
def test_bad_input_is_refused_with_a_clear_error(existing: list[tuple[int, str]], wanted: list[int], message: str) -> None:
    index = NodeIndex(four_sites())
    before = snapshot(index)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        place_more(spec_of(count=3, locations=[{"country": "US", "count": 2}]), index, existing, wanted)
    assert_unchanged(before, index)


def test_replacing_a_failed_sliver_on_random_clusters_respects_every_constraint() -> None:
    rng = random.Random(4242)
    outcomes = {"plan": 0, "refusal": 0}
    for _ in range(150):
        nodes = random_cluster(rng, operations=True)
        spec = random_spec(rng, nodes)
        index = NodeIndex(nodes)
        first = place(spec, index)
        if not isinstance(first, Plan) or not first.assignments:
            continue
        by_name = {n.name: n for n in nodes}
        for a in first.assignments:  # the controller charges what it placed
            cost = sliver_cost(spec.resources, spec.isolation, by_name[a.node].overhead)
            index.charge(a.node, spec.resources, isolation=spec.isolation)
            n = by_name[a.node]
            by_name[a.node] = replace(n, used_cpu=n.used_cpu + cost.cpu, used_memory=n.used_memory + cost.memory, used_disk=n.used_disk + cost.disk)
        lost = rng.choice(first.assignments)
        index.set_up(lost.node, rng.random() < 0.3)  # it may come back: it is avoided anyway
        by_name[lost.node] = replace(by_name[lost.node], up=bool(index.up[index.pos[lost.node]]))
        existing = [(a.request, a.node) for a in first.assignments if a is not lost]
        before = snapshot(index)
        result = place_more(spec, index, existing, [lost.request], avoid={lost.node}, explain=rng.random() < 0.5)
        assert_unchanged(before, index)
        views = list(by_name.values())
        if isinstance(result, Plan):
            check_plan(spec, views, result, existing, wanted=1)
            assert lost.node not in {a.node for a in result.assignments}
            outcomes["plan"] += 1
        else:
            assert result.reason.startswith(f"cannot place 1 more slivers beside the slice's {len(existing)}")
            assert [r.index for r in result.reports] == [lost.request]
            assert result.reports[0].placed == 0
            outcomes["refusal"] += 1
        assert place_more(spec, index, existing, [lost.request], avoid={lost.node}) == place_more(spec, index, existing, [lost.request], avoid={lost.node})
    assert outcomes["plan"] >= 20 and outcomes["refusal"] >= 5, outcomes


# ---- cordoned and draining nodes ----------------------------------------------------------


def test_cordoned_nodes_take_no_new_slivers() -> None:
    nodes = [nv("a"), nv("b", schedulable=False), nv("c", used_cpu=2.0)]
    index = NodeIndex(nodes)
    plan = place(spec_of(count=2), index)
    assert isinstance(plan, Plan) and {a.node for a in plan.assignments} == {"a", "c"}
    index.set_schedulable("a", False)
    refused = place(spec_of(count=2), index)
    assert isinstance(refused, Refusal)
    assert "2 cordoned or draining" in refused.reason
    index.set_up("a", False)
    refused = place(spec_of(count=2), index)
    assert isinstance(refused, Refusal)
    assert "1 down; 1 cordoned or draining" in refused.reason  # a down node is counted once
    index.set_up("a", True)
    index.set_schedulable("a", True)
    index.set_schedulable("b", True)
    plan = place(spec_of(count=3), index)
    assert isinstance(plan, Plan) and len(plan.assignments) == 3


def test_node_view_carries_schedulable_and_overhead() -> None:
    info = NodeInfo(
        name="n1",
        site="s1",
        location=Location("Paris", "FR", "europe", 48.85, 2.35),
        capacity=Resources(4.0, 8 * Gi, 100 * Gi),
        offers={"vm": "qemu", "container": "runc"},
    )
    view = node_view(info, up=True, schedulable=False, overhead={"vm": Resources(0.0, 200 * Mi, 0)})
    assert not view.schedulable and view.overhead["vm"].memory == 200 * Mi
    assert node_view(info, up=True).schedulable and node_view(info, up=True).overhead == {}


# ---- per-kind overhead --------------------------------------------------------------------


def test_overhead_counts_in_the_capacity_check_of_its_kind_only() -> None:
    qemu = {"vm": Resources(0.0, 512 * Mi, 0)}
    nodes = [nv("tight", memory=2 * Gi, overhead=qemu)]
    vm = spec_of(count=1, isolation="vm", resources={"memory": "1600Mi"})
    refused = place(vm, NodeIndex(nodes))
    assert isinstance(refused, Refusal)
    assert "1 lack free memory (1.6Gi with overhead)" in refused.reason
    container = spec_of(count=1, resources={"memory": "1600Mi"})
    assert isinstance(place(container, NodeIndex(nodes)), Plan)
    assert isinstance(place(spec_of(count=1, isolation="vm", resources={"memory": "1536Mi"}), NodeIndex(nodes)), Plan)


def test_charge_with_isolation_adds_the_overhead() -> None:
    index = NodeIndex([nv("n", memory=4 * Gi, overhead={"vm": Resources(0.25, 300 * Mi, 0)})])
    res = Resources(1.0, 1 * Gi, 2 * Gi)
    index.charge("n", res, isolation="vm")
    assert index.used["memory"][0] == 1 * Gi + 300 * Mi and index.used["cpu"][0] == 1.25 and index.used["disk"][0] == 2 * Gi
    index.charge("n", res, isolation="container")  # no overhead for containers on this node
    assert index.used["memory"][0] == 2 * Gi + 300 * Mi
    index.charge("n", res, -1, isolation="vm")
    index.charge("n", res, -1, isolation="container")
    assert index.used["memory"][0] == 0 and index.used["cpu"][0] == 0
    assert sliver_cost(res, "vm", {"vm": Resources(0.25, 300 * Mi, 0)}) == Resources(1.25, 1 * Gi + 300 * Mi, 2 * Gi)
    assert sliver_cost(res, "container", {"vm": Resources(0.25, 300 * Mi, 0)}) == res


def test_overhead_makes_a_node_look_busier() -> None:
    nodes = [nv("a", overhead={"vm": Resources(0.0, 4 * Gi, 0)}), nv("b")]
    vm = place(spec_of(count=1, isolation="vm"), NodeIndex(nodes))
    assert isinstance(vm, Plan) and vm.assignments[0].node == "b"
    container = place(spec_of(count=1), NodeIndex(nodes))
    assert isinstance(container, Plan) and container.assignments[0].node == "a"


def test_fast_static_check_agrees_with_the_explained_one() -> None:
    rng = random.Random(5)
    for _ in range(100):
        nodes = random_cluster(rng, operations=True)
        index = NodeIndex(nodes)
        spec = random_spec(rng, nodes)
        avoid = sorted(rng.sample(range(len(nodes)), min(len(nodes), rng.randint(0, 2))))
        bad = np.zeros(len(nodes), dtype=bool)
        for _, mask in static_filters(index, spec, avoid):
            bad |= mask
        assert np.array_equal(static_ok(index, spec, avoid), ~bad)
        avoided = {index.names[i] for i in avoid}
        expect = [not static_failures(spec, n) and n.name not in avoided for n in sorted(nodes, key=lambda n: n.name)]
        assert static_ok(index, spec, avoid).tolist() == expect
