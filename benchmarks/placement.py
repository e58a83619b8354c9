"""Placement engine alone: slivers placed per second over 100, 1,000 and 10,000 nodes.

Each slice asks for a region mix (3 north-america, 3 europe, 2 asia, the rest anywhere) with
``distinct: site`` and ``min_distance_km``; allocations are charged to the index between
slices as the controller does, so capacity fills as it would in a running cluster. The figure
is the median over several runs, each on a fresh index.

Refusals are timed too: slices that cannot fit on the 10,000-node cluster (too many distinct
countries, a min_distance_km too large, a location that has too few nodes, an exclusion),
each refused with its explanation and the spec changes that would fit (controller/relax.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from typing import Any

from benchmarks.common import ANCHORS, Goal, machine_json, median, mixed_doc, out, report, table
from controller.placement import NodeIndex, NodeView, Plan, Refusal, node_view, place
from node_agent.backends.sim import SIM_IMAGES
from slices.catalogue import builtin_catalogue, load_topology
from slices.model import NodeInfo
from slices.simcluster import sim_nodes
from slices.spec import SliceSpec, parse_spec

GOALS = {1000: 20_000.0, 10_000: 5_000.0}
REFUSAL_GOAL_MS = 50.0  # a refused slice, suggestions included, at 10,000 nodes
#: Slices the 10,000-node cluster cannot hold, each for another reason.
REFUSED = (
    {"count": 60, "distinct": "country"},
    {"count": 12, "min_distance_km": 4000},
    {"count": 20, "locations": [{"country": "JP", "count": 8}, {"region": "europe", "count": 4}]},
    {"count": 10, "locations": [{"region": "oceania", "count": 9}], "exclude": {"countries": ["AU"]}, "distinct": "city"},
    {"count": 7, "distinct": "region"},
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--nodes", type=int, default=None, help="one cluster size (default: 100, 1000 and 10000)")
    p.add_argument("--runs", type=int, default=5, help="runs per size; the median is reported (default 5)")
    p.add_argument("--slivers", type=int, default=20_000, help="slivers to place per run (default 20000)")
    p.add_argument("--slice-size", type=int, default=10, help="slivers per slice (default 10)")
    p.add_argument("--min-distance-km", type=float, default=100.0, help="min_distance_km of every slice (default 100)")
    p.add_argument("--topology", default=None, help="CSV of sites (default: the built-in catalogue)")


def node_views(n: int, topology: str | None = None) -> list[NodeView]:
    """Simulated machines as the controller's index sees them (same sizes as ``slicemesh sim``)."""
    sites = load_topology(topology) if topology else builtin_catalogue()
    images = tuple(SIM_IMAGES)
    return [node_view(dataclasses.replace(NodeInfo.from_wire(raw), images=images), up=True) for raw in sim_nodes(sites, n, "sim")]


def one_run(views: list[NodeView], specs: list[SliceSpec], slivers: int) -> tuple[float, int, int]:
    """Place slices until ``slivers`` are placed; returns (seconds in placement, placed, refused)."""
    index = NodeIndex(views)
    placed = refused = 0
    elapsed = 0.0
    k = 0
    while placed < slivers:
        spec = specs[k % len(specs)]
        k += 1
        t0 = time.perf_counter()
        result = place(spec, index)
        if isinstance(result, Plan):
            res = spec.resources
            for a in result.assignments:
                index.charge(a.node, res)
            placed += len(result.assignments)
        else:
            refused += 1
        elapsed += time.perf_counter() - t0
        if refused > 50 and refused > k // 2:
            break  # the cluster is full: report what fit
    return elapsed, placed, refused


def refusal_ms(views: list[NodeView], runs: int) -> list[float]:
    """Per refused slice, the median milliseconds of ``place`` answering with a refusal."""
    index = NodeIndex(views)
    out = []
    for i, placement in enumerate(REFUSED):
        spec = parse_spec({"name": f"refused-{i}", "description": "cannot fit", "placement": placement}, default_owner="bench")
        place(spec, index)  # the index's caches warm, as in a running controller
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            result = place(spec, index)
            times.append((time.perf_counter() - t0) * 1000)
            assert isinstance(result, Refusal) and result.suggestions, f"{placement} should be refused with suggestions"
        out.append(median(times))
    return out


def measure(n: int, args: argparse.Namespace) -> dict[str, Any]:
    views = node_views(n, args.topology)
    specs = [parse_spec(mixed_doc(f"bench-{i}", args.slice_size, args.min_distance_km), default_owner="bench") for i in range(16)]
    rates, refusals, placed_counts = [], [], []
    for _ in range(args.runs):
        secs, placed, refused = one_run(views, specs, args.slivers)
        rates.append(placed / secs if secs > 0 else 0.0)
        refusals.append(refused)
        placed_counts.append(placed)
    return {
        "nodes": len(views),
        "slivers_per_s": round(median(rates), 1),
        "slices_per_s": round(median(rates) / args.slice_size, 1),
        "runs": args.runs,
        "slivers_per_run": int(median(placed_counts)),
        "refusals_per_run": int(median(refusals)),
        "us_per_sliver": round(1e6 / median(rates), 2) if median(rates) else None,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.quick:
        sizes = [args.nodes or 100]
        args.runs = min(args.runs, 3)
        args.slivers = min(args.slivers, 2_000)
    else:
        sizes = [args.nodes] if args.nodes else [100, 1000, 10_000]
    rows = [measure(n, args) for n in sizes]
    by_size = {r["nodes"]: r for r in rows}
    main = by_size.get(1000) or rows[0]
    goals = [Goal(f"slivers/s at {n:,} nodes", by_size[n]["slivers_per_s"], target, True) for n, target in GOALS.items() if n in by_size]
    refusals = refusal_ms(node_views(10_000, args.topology), args.runs) if 10_000 in by_size else []
    if refusals:
        goals.append(Goal("refusal with suggestions at 10,000 nodes, slowest", round(max(refusals), 1), REFUSAL_GOAL_MS, False, " ms"))
    measured = [("what", f"controller.placement.place + NodeIndex.charge, {args.slice_size}-sliver slices (region mix, distinct: site, min_distance_km {args.min_distance_km:g}), median of {args.runs} runs")]
    measured += [(f"{r['nodes']:,} nodes", f"{r['slivers_per_s']:,.0f} slivers/s ({r['us_per_sliver']} us/sliver, {r['refusals_per_run']} refusals/run)") for r in rows]
    if refusals:
        measured.append(("refusals at 10,000 nodes", f"{len(refusals)} slices that cannot fit, median of {args.runs}: " + ", ".join(f"{ms:.1f}" for ms in refusals) + " ms"))
    detail = table(
        [[f"{r['nodes']:,}", f"{r['slivers_per_s']:,.0f}", f"{r['slices_per_s']:,.0f}", str(r["slivers_per_run"]), str(r["refusals_per_run"])] for r in rows],
        ["nodes", "slivers/s", "slices/s", "slivers/run", "refusals/run"],
    )
    report(args, "placement: the engine alone", ANCHORS, measured, goals, detail)
    if not args.json:
        print(file=out(args))
    return {
        "benchmark": "placement",
        "nodes": main["nodes"],
        "slivers_per_s": main["slivers_per_s"],
        "sizes": rows,
        "refusal_ms": [round(ms, 2) for ms in refusals],
        "goals_met": all(g.met for g in goals),
        "machine": machine_json(),
    }
