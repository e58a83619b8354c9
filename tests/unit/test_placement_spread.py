"""controller/solver.py: the default placement spreads slivers geographically (issue 11):
no two in one city unless nothing else fits, farthest from the slice's other slivers first,
load weighed in so that nodes fill evenly; explicit ``spread``/``distinct`` keep their meaning."""

from __future__ import annotations

import collections
import itertools
from pathlib import Path

import pytest
from placement_cases import check_plan, nv, spec_of

from controller.placement import NodeIndex, NodeView, Plan, place, place_more
from controller.solver import LOAD_WEIGHT
from slices.catalogue import load_topology
from slices.geo import haversine_km
from slices.spec import SliceSpec

# beside the clone, as in test_settings_catalogue.py, or beside the worktrees' folder
MLAB = next((p / "shared/data/mlab-sites.csv" for p in Path(__file__).resolve().parents[2:] if (p / "shared/data/mlab-sites.csv").exists()), Path("shared/data/mlab-sites.csv"))


def mlab_nodes() -> list[NodeView]:
    if not MLAB.exists():
        pytest.skip("the M-Lab topology (shared/data/mlab-sites.csv) is not beside this checkout")
    return [
        nv(f"{s.name}-{m}", s.name, s.city, s.country, s.region, s.lat, s.lon)
        for s in load_topology(MLAB)
        for m in range(s.machines)
    ]


def cities(plan: Plan, nodes: list[NodeView]) -> list[str]:
    by_name = {n.name: n for n in nodes}
    return [by_name[a.node].city for a in plan.assignments]


def min_pair_km(plan: Plan, nodes: list[NodeView]) -> float:
    by_name = {n.name: n for n in nodes}
    pts = [by_name[a.node] for a in plan.assignments]
    return min(haversine_km(a.lat, a.lon, b.lat, b.lon) for a, b in itertools.combinations(pts, 2))


def test_eight_slivers_in_asia_land_in_eight_cities_on_mlab() -> None:
    nodes = mlab_nodes()
    spec = spec_of(locations=[{"region": "asia", "count": 8}])
    plan = place(spec, NodeIndex(nodes))
    assert isinstance(plan, Plan)
    check_plan(spec, nodes, plan)
    assert len(set(cities(plan, nodes))) == 8, cities(plan, nodes)
    # what the least-loaded placement did before, and still does when asked: most in Mumbai
    packed = place(spec_of(locations=[{"region": "asia", "count": 8}], spread="none"), NodeIndex(nodes))
    assert isinstance(packed, Plan)
    assert collections.Counter(cities(packed, nodes)).most_common(1)[0][1] >= 5
    assert min_pair_km(plan, nodes) > 500 > min_pair_km(packed, nodes)


def test_farthest_from_the_slice_first() -> None:
    nodes = [nv(f"n{i}", city=f"C{i}", lat=0.0, lon=float(10 * i)) for i in range(7)]  # 1,112 km apart
    plan = place(spec_of(count=3), NodeIndex(nodes))
    assert isinstance(plan, Plan)
    assert [a.node for a in plan.assignments] == ["n0", "n6", "n3"]


def test_a_city_is_shared_only_when_the_request_leaves_no_other() -> None:
    nodes = [
        nv("tokyo-a", site="hnd01", city="Tokyo", country="JP", region="asia", lat=35.55, lon=139.78),
        nv("tokyo-b", site="nrt01", city="Tokyo", country="JP", region="asia", lat=35.77, lon=140.39),
        nv("osaka", site="kix01", city="Osaka", country="JP", region="asia", lat=34.43, lon=135.23),
    ]
    two = place(spec_of(locations=[{"country": "JP", "count": 2}]), NodeIndex(nodes))
    assert isinstance(two, Plan)
    assert sorted(cities(two, nodes)) == ["Osaka", "Tokyo"]
    three = place(spec_of(locations=[{"country": "JP", "count": 3}]), NodeIndex(nodes))
    assert isinstance(three, Plan)  # the third can only share a city: it does
    assert sorted(cities(three, nodes)) == ["Osaka", "Tokyo", "Tokyo"]
    in_tokyo = place(spec_of(locations=[{"city": "Tokyo", "count": 2}]), NodeIndex(nodes))
    assert isinstance(in_tokyo, Plan) and cities(in_tokyo, nodes) == ["Tokyo", "Tokyo"]


def test_without_distinct_a_city_with_fewer_slivers_comes_first() -> None:
    nodes = [nv(f"{c}{m}", site=c, city=c.upper(), lat=0.0, lon=lon) for c, lon in (("a", 0.0), ("b", 1.0)) for m in range(4)]
    plan = place(spec_of(count=4, distinct="none"), NodeIndex(nodes))
    assert isinstance(plan, Plan)
    assert collections.Counter(cities(plan, nodes)) == {"A": 2, "B": 2}


def test_load_is_weighed_against_distance() -> None:
    # b is twice as far from a as c is; b's extra utilisation decides whether the distance pays
    def nodes(b_used: float) -> list[NodeView]:
        return [nv("a", city="A", lat=0.0, lon=0.0), nv("b", city="B", lat=0.0, lon=20.0, used_cpu=b_used), nv("c", city="C", lat=0.0, lon=10.0)]

    spec = spec_of(count=2, resources={"cpu": 0.5, "memory": "64Mi"})
    # score = d / D - LOAD_WEIGHT * load: b wins while 1 - 4 * load_b > 0.5 - 4 * load_c
    assert LOAD_WEIGHT == 4.0
    far = place(spec, NodeIndex(nodes(0.4)))  # b at 0.225, c at 0.125: 0.1 > 0.0
    assert isinstance(far, Plan) and [a.node for a in far.assignments] == ["a", "b"]
    near = place(spec, NodeIndex(nodes(1.0)))  # b at 0.375, c at 0.125: -0.5 < 0.0
    assert isinstance(near, Plan) and [a.node for a in near.assignments] == ["a", "c"]


def test_equally_far_goes_to_the_least_loaded_then_by_name() -> None:
    nodes = [
        nv("a", city="A", lat=0.0, lon=0.0),
        nv("z-west", city="W", lat=0.0, lon=-10.0),
        nv("m-east", city="E", lat=0.0, lon=10.0, used_cpu=1.0),
        nv("y-north", city="N", lat=10.0, lon=0.0),
    ]
    spec = spec_of(count=2, resources={"cpu": 0.5, "memory": "64Mi"})
    plan = place(spec, NodeIndex(nodes))
    assert isinstance(plan, Plan)
    assert [a.node for a in plan.assignments] == ["a", "y-north"]  # 1,112 km each; east is busier


def spread_cluster() -> tuple[list[NodeView], list[SliceSpec]]:
    nodes = mlab_nodes()
    specs = [
        spec_of(count=8, resources={"cpu": 0.25}),
        spec_of(locations=[{"region": "europe", "count": 4}], resources={"cpu": 0.25}),
        spec_of(locations=[{"region": "asia", "count": 8}], resources={"cpu": 0.25}),
        spec_of(count=10, min_distance_km=500, resources={"cpu": 0.25}),
    ]
    return nodes, specs


def test_nodes_fill_evenly_while_slices_spread() -> None:
    """400 slices on M-Lab: every node used, none above 70% while the median is at 12%."""
    nodes, specs = spread_cluster()
    index = NodeIndex(nodes)
    per_node: collections.Counter[str] = collections.Counter()
    for k in range(400):
        spec = specs[k % len(specs)]
        plan = place(spec, index)
        assert isinstance(plan, Plan), plan
        assert len(set(cities(plan, nodes))) == len(plan.assignments)
        for a in plan.assignments:
            index.charge(a.node, spec.resources)
            per_node[a.node] += 1
    assert len(per_node) == len(nodes)
    assert max(per_node.values()) <= 11  # 4 cores: 11 slivers of 0.25 is 69%


def test_existing_slivers_count_for_spreading() -> None:
    nodes = [nv(f"n{i}", city=f"C{i}", lat=0.0, lon=float(10 * i)) for i in range(7)]
    plan = place_more(spec_of(count=3), NodeIndex(nodes), [(0, "n0"), (0, "n6")], [0])
    assert isinstance(plan, Plan) and [a.node for a in plan.assignments] == ["n3"]
    city = [nv("x1", site="x1", city="X", lat=0.0, lon=0.0), nv("x2", site="x2", city="X", lat=0.0, lon=50.0), nv("y", city="Y", lat=0.0, lon=1.0)]
    again = place_more(spec_of(count=2), NodeIndex(city), [(0, "x1")], [0])
    assert isinstance(again, Plan) and [a.node for a in again.assignments] == ["y"]  # x2 is far, but in X


def test_explicit_spread_and_distinct_keep_their_meaning() -> None:
    nodes = [nv(f"{c}{i}", city=f"{c}-city{i}", country=c, region="europe", lat=0.0, lon=lon + i) for c, lon in (("DE", 0.0), ("FR", 40.0)) for i in range(4)]
    # spread: country balances counts, whatever the distances
    plan = place(spec_of(count=4, distinct="none", spread="country"), NodeIndex(nodes))
    assert isinstance(plan, Plan)
    assert collections.Counter(n[:2] for n in (a.node for a in plan.assignments)) == {"DE": 2, "FR": 2}
    # distinct: country stays hard: a third country does not exist
    assert not isinstance(place(spec_of(count=3, distinct="country"), NodeIndex(nodes)), Plan)
    # min_distance_km stays hard too, spreading or not
    spec = spec_of(count=2, min_distance_km=2500)
    plan = place(spec, NodeIndex(nodes))
    assert isinstance(plan, Plan)
    check_plan(spec, nodes, plan)
    assert not isinstance(place(spec_of(count=3, min_distance_km=2500), NodeIndex(nodes)), Plan)
