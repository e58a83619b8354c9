"""Shared cases for the placement tests: synthetic nodes, random clusters and specs, and
checks of every constraint computed independently of controller/placement.py."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from controller.placement import NodeIndex, NodeView, Plan, Refusal
from slices.catalogue import Site, builtin_catalogue
from slices.geo import haversine_km
from slices.model import Resources
from slices.spec import LocationRequest, SliceSpec, parse_spec

Mi, Gi = 1024**2, 1024**3
CATALOGUE = builtin_catalogue()
IMAGES = ("busybox", "alpine", "debian-12")


def nv(
    name: str,
    site: str = "",
    city: str = "City",
    country: str = "US",
    region: str = "north-america",
    lat: float = 0.0,
    lon: float = 0.0,
    *,
    cpu: float = 4.0,
    memory: float = 8 * Gi,
    disk: float = 100 * Gi,
    up: bool = True,
    kinds: Iterable[str] = ("container", "vm"),
    images: Iterable[str] = ("busybox",),
    used_cpu: float = 0.0,
    used_memory: float = 0.0,
    used_disk: float = 0.0,
    schedulable: bool = True,
    overhead: Mapping[str, Resources] | None = None,
) -> NodeView:
    """A synthetic node; ``site`` defaults to the node name."""
    return NodeView(
        name=name,
        site=site or name,
        city=city,
        country=country,
        region=region,
        lat=lat,
        lon=lon,
        up=up,
        kinds=frozenset(kinds),
        images=frozenset(images),
        cpu=cpu,
        memory=memory,
        disk=disk,
        used_cpu=used_cpu,
        used_memory=used_memory,
        used_disk=used_disk,
        schedulable=schedulable,
        overhead=dict(overhead or {}),
    )


def at(site: Site, name: str, **kw: Any) -> NodeView:
    return nv(name, site.name, site.city, site.country, site.region, site.lat, site.lon, **kw)


def spec_of(**placement: Any) -> SliceSpec:
    extra: dict[str, Any] = {k: placement.pop(k) for k in ("resources", "image", "isolation") if k in placement}
    return parse_spec({"name": "t", "description": "test", **extra, "placement": placement})


def snapshot(index: NodeIndex) -> dict[str, Any]:
    arrays: dict[str, Any] = {"unit": index.unit.copy(), "up": index.up.copy(), "schedulable": index.schedulable.copy()}
    for group in ("cap", "used", "ids", "kinds", "images"):
        for key, arr in getattr(index, group).items():
            arrays[f"{group}.{key}"] = arr.copy()
    arrays["names"] = list(index.names)
    arrays["vocab"] = {k: dict(v) for k, v in index.vocab.items()}
    return arrays


def assert_unchanged(before: dict[str, Any], index: NodeIndex) -> None:
    after = snapshot(index)
    assert before.keys() == after.keys()
    for key in before:
        if isinstance(before[key], np.ndarray):
            assert np.array_equal(before[key], after[key]), f"placement mutated {key}"
        else:
            assert before[key] == after[key], f"placement mutated {key}"


def matches(req: LocationRequest, n: NodeView) -> bool:
    if req.kind == "any":
        return True
    if req.kind == "near":
        assert req.lat is not None and req.lon is not None and req.within_km is not None
        return haversine_km(req.lat, req.lon, n.lat, n.lon) <= req.within_km * (1 + 1e-6) + 1e-6
    if req.kind == "city":
        return n.city.lower() == str(req.value).lower()
    return bool(getattr(n, req.kind) == req.value)


def static_failures(spec: SliceSpec, n: NodeView) -> list[str]:
    """The constraints that rule a node out, whatever the other slivers: computed independently."""
    ex = spec.placement.exclude
    res = spec.resources + n.overhead.get(spec.isolation, Resources())
    out = []
    if not n.up:
        out.append("down")
    if not n.schedulable:
        out.append("cordoned")
    if spec.isolation not in n.kinds:
        out.append("isolation")
    if spec.image not in n.images:
        out.append("image")
    if n.site in ex.sites or n.country in ex.countries or n.name in ex.nodes:
        out.append("excluded")
    if n.cpu - n.used_cpu < res.cpu - 1e-9:
        out.append("cpu")
    if n.memory - n.used_memory < res.memory:
        out.append("memory")
    if n.disk - n.used_disk < (res.disk or 0):
        out.append("disk")
    return out


def check_plan(spec: SliceSpec, nodes: Sequence[NodeView], plan: Plan, existing: Sequence[tuple[int, str]] = (), wanted: int | None = None) -> None:
    """Every hard constraint of issue 2 section 5, for every placed sliver.

    With ``existing`` (a ``place_more`` plan): the new slivers hold them beside those, and
    ``wanted`` slivers were asked for.
    """
    by_name = {n.name: n for n in nodes}
    pl = spec.placement
    requests = pl.requests()
    new = [by_name[a.node] for a in plan.assignments]
    placed = new + [by_name[name] for _, name in existing]
    wanted = pl.count if wanted is None else wanted
    assert plan.wanted == wanted
    if pl.min_count is None:
        assert len(new) == wanted
        assert not plan.partial
    else:
        assert min(wanted, pl.min_count - len(existing)) <= len(new) <= wanted
        assert plan.partial == (len(new) < wanted)
    assert len({n.name for n in placed}) == len(placed), "two slivers on one node"
    everything = [*(a.request for a in plan.assignments), *(ri for ri, _ in existing)]
    for ri, group in itertools.groupby(sorted(everything)):
        assert 0 <= ri < len(requests)
        assert len(list(group)) <= requests[ri].count
    for a in plan.assignments:
        n = by_name[a.node]
        assert static_failures(spec, n) == [], (a, n)
        assert matches(requests[a.request], n), (requests[a.request], n)
    if pl.distinct != "none":
        values = [getattr(n, pl.distinct).lower() if pl.distinct == "city" else getattr(n, pl.distinct) for n in placed]
        assert len(set(values)) == len(values), f"distinct {pl.distinct} violated: {values}"
    if pl.min_distance_km:
        for x, y in itertools.combinations(placed, 2):
            d = haversine_km(x.lat, x.lon, y.lat, y.lon)
            assert d >= pl.min_distance_km * (1 - 1e-6), f"{x.name}-{y.name} {d} km < {pl.min_distance_km}"


def check_refusal(spec: SliceSpec, nodes: Sequence[NodeView], refusal: Refusal) -> None:
    pl = spec.placement
    requests = pl.requests()
    assert refusal.reason.startswith(f"cannot place {pl.count} slivers")
    if pl.min_count is not None:
        assert f"(min_count {pl.min_count})" in refusal.reason
    assert len(refusal.reports) == len(requests)
    total = sum(r.placed for r in refusal.reports)
    assert total < (pl.min_count if pl.min_count is not None else pl.count)
    assert f"only {total} fit" in refusal.reason
    short = [r for r in refusal.reports if r.placed < r.wanted]
    assert short, "a refusal must say which request could not be met"
    for i, (rep, req) in enumerate(zip(refusal.reports, requests, strict=True)):
        assert rep.index == i
        assert rep.wanted == req.count
        assert rep.path == (f"placement.locations[{i}]" if req.kind != "any" else "placement.count")
        matching = [n for n in nodes if matches(req, n)]
        assert rep.matched == len(matching)
        assert rep.candidates == sum(1 for n in matching if not static_failures(spec, n))
        assert sum(k for _, k in rep.removed) + rep.candidates == rep.matched
        if rep.placed < rep.wanted:
            assert f"{rep.path} ({req.describe()}) wants {req.count}: {rep.matched} nodes match" in refusal.reason
            assert f"{rep.candidates} left" in refusal.reason
            assert f"placed {rep.placed}" in refusal.reason


# ---- random clusters and specs ------------------------------------------------------------


def random_cluster(rng: random.Random, *, operations: bool = False) -> list[NodeView]:
    """Up to 40 sites of 1-3 machines; ``operations`` adds cordoned nodes and VM overheads."""
    sites = rng.sample(CATALOGUE, rng.randint(1, 40))
    nodes = []
    for s in sites:
        for m in range(rng.randint(1, 3)):
            cpu = rng.choice([0.5, 1.0, 2.0, 4.0, 8.0])
            memory = rng.choice([512 * Mi, 2 * Gi, 8 * Gi])
            disk = rng.choice([5 * Gi, 50 * Gi])
            kinds = rng.choice([("container",), ("vm",), ("container", "vm"), ("container", "vm")])
            images = rng.sample(IMAGES, rng.randint(1, 3))
            nodes.append(
                at(
                    s,
                    f"{s.name}-{m}",
                    cpu=cpu,
                    memory=memory,
                    disk=disk,
                    up=rng.random() > 0.1,
                    kinds=kinds,
                    images=images,
                    used_cpu=cpu * rng.choice([0, 0, 0.25, 0.5, 0.9]),
                    used_memory=memory * rng.choice([0, 0, 0.5, 0.9]),
                    used_disk=disk * rng.choice([0, 0.5]),
                )
            )
    if operations:
        nodes = [
            replace(
                n,
                schedulable=rng.random() > 0.15,
                overhead={"vm": Resources(rng.choice([0.0, 0.25]), rng.choice([0, 64 * Mi, 512 * Mi]), 0)} if rng.random() < 0.5 else {},
            )
            for n in nodes
        ]
    return nodes


def random_location(rng: random.Random, nodes: Sequence[NodeView]) -> dict[str, Any]:
    n = rng.choice(nodes)
    kind = rng.choice(["region", "country", "site", "city", "near", "region"])
    count = rng.choice([1, 1, 1, 2, 3])
    if kind == "region":
        return {"region": rng.choice([n.region, rng.choice(["africa", "asia", "europe", "north-america", "oceania", "south-america"])]), "count": count}
    if kind == "country":
        return {"country": rng.choice([n.country, "DE", "JP", "BR"]), "count": count}
    if kind == "site":
        return {"site": n.site, "count": 1}
    if kind == "city":
        return {"city": rng.choice([n.city, n.city.upper(), n.city.lower()]), "count": count}
    return {"near": {"lat": n.lat, "lon": n.lon}, "within_km": rng.choice([50, 300, 1000, 3000]), "count": count}


def random_spec(rng: random.Random, nodes: Sequence[NodeView]) -> SliceSpec:
    return parse_spec(random_doc(rng, nodes))


def random_doc(rng: random.Random, nodes: Sequence[NodeView]) -> dict[str, Any]:
    """A random slice spec document, as a user writes it."""
    locations = [random_location(rng, nodes) for _ in range(rng.choice([0, 0, 1, 2, 3]))]
    asked = sum(loc["count"] for loc in locations)
    placement: dict[str, Any] = {"locations": locations, "distinct": rng.choice(["site", "site", "city", "country", "region", "none"])}
    count = max(asked, 1) + rng.choice([0, 0, 1, 3])
    if rng.random() < 0.7:
        placement["count"] = count
    else:
        count = asked or 1
    if rng.random() < 0.3:
        placement["min_distance_km"] = rng.choice([100, 500, 2000])
    if rng.random() < 0.3:
        placement["spread"] = rng.choice(["site", "city", "country", "region", "none"])
    if rng.random() < 0.3:
        placement["min_count"] = rng.randint(1, count)
    if rng.random() < 0.3:
        placement["exclude"] = {
            "sites": [rng.choice(nodes).site],
            "countries": [rng.choice(nodes).country] if rng.random() < 0.5 else [],
            "nodes": [rng.choice(nodes).name],
        }
    resources: dict[str, Any] = {"cpu": rng.choice([0.25, 0.5, 1, 2]), "memory": rng.choice(["64Mi", "256Mi", "1Gi", "4Gi"])}
    if rng.random() < 0.5:
        resources["disk"] = rng.choice(["1Gi", "10Gi", "40Gi"])
    return {
        "name": "random",
        "description": "property test",
        "isolation": rng.choice(["container", "container", "vm"]),
        "image": rng.choice(IMAGES),
        "resources": resources,
        "placement": placement,
    }
