"""controller/relax.py: a refusal suggests single spec changes that fit, each tried, and says
which fields they change; applying one to the document gives a slice that places."""

from __future__ import annotations

import copy
import json
import random
import re
import time
from typing import Any

import pytest
from placement_cases import CATALOGUE, at, nv, random_cluster, random_doc

from controller import relax
from controller.placement import NodeIndex, NodeView, Plan, Refusal, place, place_more
from slices.spec import parse_spec

_INDEXED = re.compile(r"^(\w+)\[(\d+)\]$")


def doc_of(**placement: Any) -> dict[str, Any]:
    extra = {k: placement.pop(k) for k in ("resources", "image", "isolation") if k in placement}
    return {"name": "t", "description": "test", **extra, "placement": placement}


def apply(doc: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """The document with a suggestion's changes made, as a user would edit it."""
    out = copy.deepcopy(doc)
    removed = []
    for path, value in changes.items():
        *parents, last = path.split(".")
        where: Any = out
        for part in parents:
            m = _INDEXED.match(part)
            where = where.setdefault(m.group(1), [])[int(m.group(2))] if m else where.setdefault(part, {})
        m = _INDEXED.match(last)
        if m and value is None:
            removed.append((where[m.group(1)], int(m.group(2))))
        elif m:
            where[m.group(1)][int(m.group(2))] = value
        elif value is None:
            where.pop(last, None)
        else:
            where[last] = value
    for entries, i in sorted(removed, key=lambda r: -r[1]):
        del entries[i]
    return out


def refused(nodes: list[NodeView], doc: dict[str, Any]) -> Refusal:
    result = place(parse_spec(doc), NodeIndex(nodes))
    assert isinstance(result, Refusal), result
    return result


def assert_each_fits(nodes: list[NodeView], doc: dict[str, Any], refusal: Refusal) -> None:
    for s in refusal.suggestions:
        changed = apply(doc, dict(s.changes))
        assert isinstance(place(parse_spec(changed), NodeIndex(nodes)), Plan), (s, changed)


def test_weaker_distinct_one_step_at_a_time() -> None:
    nodes = [nv("a", site="a", city="X"), nv("b", site="b", city="X"), nv("c", site="c", city="Y")]
    doc = doc_of(count=3, distinct="city")
    r = refused(nodes, doc)
    assert r.suggestions[0].text == "feasible with distinct: site instead of distinct: city"
    assert r.suggestions[0].changes == {"placement.distinct": "site"}
    assert r.suggestions[0].text in r.message and r.message.startswith(r.reason)
    assert_each_fits(nodes, doc, r)
    region = refused([nv("a", country="DE", region="europe"), nv("b", country="DE", region="europe")], doc_of(count=2, distinct="region"))
    assert region.suggestions[0].changes == {"placement.distinct": "site"}  # country and city do not help


def test_largest_min_distance_that_fits() -> None:
    nodes = [nv(f"n{i}", city=f"C{i}", lat=0.0, lon=10.0 * i) for i in range(3)]  # 1,112 km apart
    doc = doc_of(count=3, min_distance_km=3000)
    r = refused(nodes, doc)
    (s,) = [s for s in r.suggestions if "min_distance_km" in s.text]
    assert s.text == "feasible without min_distance_km 3000 (1,100 works)"
    assert s.changes == {"placement.min_distance_km": 1100.0}
    assert_each_fits(nodes, doc, r)
    assert isinstance(place(parse_spec(doc_of(count=3, min_distance_km=1200)), NodeIndex(nodes)), Refusal)


def test_fewer_slivers() -> None:
    nodes = [nv(f"n{i}") for i in range(3)]
    doc = doc_of(count=5)
    r = refused(nodes, doc)
    assert [s.text for s in r.suggestions] == ["feasible with min_count 3 (3 of 5 fit)", "feasible with count 3"]
    assert [s.changes for s in r.suggestions] == [{"placement.min_count": 3}, {"placement.count": 3}]
    assert_each_fits(nodes, doc, r)


def test_fewer_slivers_of_a_location_and_a_wider_location() -> None:
    nodes = [
        nv("jp1", city="Tokyo", country="JP", region="asia", lat=35.7, lon=139.7),
        nv("jp2", city="Osaka", country="JP", region="asia", lat=34.7, lon=135.5),
        nv("kr1", city="Seoul", country="KR", region="asia", lat=37.6, lon=127.0),
        nv("us1"),
    ]
    doc = doc_of(count=4, locations=[{"country": "JP", "count": 3}])
    r = refused(nodes, doc)
    texts = [s.text for s in r.suggestions]
    assert texts == [
        "feasible with min_count 3 (3 of 4 fit)",
        "feasible with count 3 (locations[0].count 2)",
        "feasible if region asia is allowed for placement.locations[0] (country JP)",
    ]
    assert r.suggestions[2].changes == {"placement.locations[0]": {"region": "asia", "count": 3}}
    assert_each_fits(nodes, doc, r)


def test_without_an_exclusion() -> None:
    nodes = [nv("a", site="mit"), nv("b", site="ucb"), nv("c", site="cmu", up=False)]
    doc = doc_of(count=2, exclude={"sites": ["mit", "cmu"], "nodes": ["zz"]})
    r = refused(nodes, doc)
    (s,) = [s for s in r.suggestions if "exclude" in s.text]
    assert s.text == "feasible without exclude.sites mit"
    assert s.changes == {"placement.exclude.sites": ["cmu"]}
    assert_each_fits(nodes, doc, r)


def test_nothing_to_suggest_when_no_single_change_helps() -> None:
    nodes = [nv("a", images=("alpine",))]
    r = refused(nodes, doc_of(count=1))
    assert r.suggestions == () and r.message == r.reason and r.details()["suggestions"] == []
    assert place(parse_spec(doc_of(count=1)), NodeIndex(nodes), suggest=False) == r


def test_details_are_plain_data() -> None:
    r = refused([nv("a"), nv("b")], doc_of(count=3))
    details = json.loads(json.dumps(r.details()))
    assert details["suggestions"] == [
        {"text": "feasible with min_count 2 (2 of 3 fit)", "changes": {"placement.min_count": 2}},
        {"text": "feasible with count 2", "changes": {"placement.count": 2}},
    ]
    (req,) = details["requests"]  # the numbers behind the refusal, per location request
    assert (details["wanted"], details["placed"], req["wanted"], req["placed"], req["matched"]) == (3, 2, 3, 2, 2)
    assert req["text"] == r.reports[0].text() and req["request"] == r.reports[0].path


def test_place_more_suggests_too() -> None:
    nodes = [nv("a1", site="a", city="A"), nv("a2", site="a2", city="A", lon=1.0), nv("b1", site="b", city="B", lon=2.0)]
    spec = parse_spec(doc_of(count=3, distinct="city"))
    r = place_more(spec, NodeIndex(nodes), [(0, "a1"), (0, "b1")], [0])
    assert isinstance(r, Refusal)
    assert [s.text for s in r.suggestions] == ["feasible with distinct: site instead of distinct: city", "feasible with min_count 2 (2 of 3 fit)"]


def test_every_suggestion_on_random_clusters_fits() -> None:
    rng = random.Random(77)
    checked = 0
    for _ in range(120):
        nodes = random_cluster(rng)
        doc = random_doc(rng, nodes)
        result = place(parse_spec(doc), NodeIndex(nodes))
        if isinstance(result, Refusal):
            assert result == place(parse_spec(doc), NodeIndex(nodes))
            assert_each_fits(nodes, doc, result)
            checked += len(result.suggestions)
    assert checked >= 40, checked


def big_cluster() -> list[NodeView]:
    rng = random.Random(10_000)
    return [at(CATALOGUE[i % len(CATALOGUE)], f"node{i:05d}", used_cpu=rng.choice([0.0, 1.0, 2.0, 3.5])) for i in range(10_000)]


@pytest.mark.parametrize(
    "placement",
    [
        {"count": 60, "distinct": "country"},  # 49 countries
        {"count": 12, "min_distance_km": 4000},
        {"locations": [{"country": "JP", "count": 8}, {"region": "europe", "count": 4}], "count": 20},
        {"count": 10, "locations": [{"region": "oceania", "count": 9}], "exclude": {"countries": ["AU"]}, "distinct": "city"},
    ],
)
def test_a_refusal_at_ten_thousand_nodes_stays_bounded(placement: dict[str, Any]) -> None:
    index = NodeIndex(big_cluster())
    spec = parse_spec(doc_of(**placement))
    place(spec, index)  # warm the index's caches, as a running controller has them
    t0 = time.process_time()
    result = place(spec, index)
    spent = time.process_time() - t0
    assert isinstance(result, Refusal) and result.suggestions, result
    assert relax.MAX_TRIALS >= 1
    # ~50 ms on an idle machine (docs/benchmarks.md); CPU time, and a wide margin for a busy one
    assert spent < 0.5, spent
