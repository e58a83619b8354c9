"""End to end through the control plane: slivers from ``create`` until the controller reports
them running, with a real controller process, real SQLite, real ZeroMQ on loopback and
simulated agents (``sim`` backend) hosted by a few processes, as ``slicemesh sim`` runs them.

Two figures: sustained slivers/s while several pipelined clients create many 10-sliver slices
(region mix, ``distinct: site``, ``min_distance_km``), counted until every slice is running;
and the seconds a 100-location slice takes from ``create`` to ``running`` (median of repeats).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import psutil

from benchmarks.common import ANCHORS, BenchCluster, Goal, Pipeline, add_curve_argument, add_keep_argument, machine_json, median, mixed_doc, report, slice_doc
from slices.client import Client
from slices.protocol import CreateSlice, DeleteSlice, ListSlices
from slices.transport import ClientKeys
from slices.wire import to_wire

GOAL_RATE = 3000.0
GOAL_SLICE100 = 1.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_curve_argument(p)
    add_keep_argument(p)
    p.add_argument("--nodes", type=int, default=None, help="simulated nodes (default 1000; with --topology, every machine in it)")
    p.add_argument("--topology", default=None, help="CSV of sites, e.g. ../shared/data/mlab-sites.csv")
    p.add_argument("--slices", type=int, default=1000, help="10-sliver slices created in the throughput run (default 1000)")
    p.add_argument("--connections", type=int, default=4, help="client DEALER connections (default 4)")
    p.add_argument("--window", type=int, default=16, help="outstanding creates per connection (default 16)")
    p.add_argument("--repeats", type=int, default=5, help="100-location slices created one after another (default 5)")
    p.add_argument("--agent-state", choices=("disk", "memory"), default="disk", help="disk: simulated agents keep their desired-set cache and sim records on disk, as `slicemesh sim` runs them (default); memory: no agent state files")
    p.add_argument("--per-process", type=int, default=0, help="simulated agents per host process (default: as `slicemesh sim`, 4 processes)")
    p.add_argument(
        "--agents-nice",
        type=int,
        default=0,
        help="CPU priority the simulated machines' host processes run below the controller (default 0: they share the cores equally, as the goal is measured; 19 shows the control plane with the machines standing for other machines, as `bench responsiveness` runs them)",
    )


def cluster_size(args: argparse.Namespace) -> int | None:
    if args.quick:
        return args.nodes or 100
    if args.topology:
        return int(args.nodes) if args.nodes else None
    return int(args.nodes or 1000)


def slice_states(client: Client) -> dict[str, str]:
    return {s["name"]: s["state"] for s in to_wire(client.call(ListSlices(), timeout=30).slices)}


def wait_running(client: Client, names: set[str], timeout: float, delay: float = 0.05) -> float:
    """perf_counter() when every named slice was first seen running."""
    deadline = time.monotonic() + timeout
    while True:
        states = slice_states(client)
        now = time.perf_counter()
        bad = {n: states.get(n) for n in names if states.get(n) in ("failed", None)}
        if bad:
            raise RuntimeError(f"slices did not come up: {dict(list(bad.items())[:3])}")
        if all(states.get(n) == "running" for n in names):
            return now
        if time.monotonic() > deadline:
            left = sum(states.get(n) != "running" for n in names)
            raise TimeoutError(f"{left} of {len(names)} slices still not running after {timeout:g}s")
        time.sleep(delay)


def slice100(client: Client, sites: int, repeats: int) -> tuple[list[float], str]:
    """Create a 100-location slice, wait until it runs, delete it; ``repeats`` times."""
    distinct = "site" if sites >= 100 else "none"
    times = []
    for i in range(repeats):
        name = f"hundred-{i}"
        doc = slice_doc(name, 100, distinct=distinct)
        t0 = time.perf_counter()
        client.call(CreateSlice(spec=doc), timeout=30)
        t1 = wait_running(client, {name}, 30, delay=0.002)
        times.append(t1 - t0)
        client.call(DeleteSlice(name=name), timeout=30)
        time.sleep(0.2)  # let the agents destroy it before the next one
    return times, distinct


def cpu_seconds(procs: list[psutil.Process]) -> float:
    """User and system CPU seconds of ``procs`` so far, summed."""
    total = 0.0
    for p in procs:
        t = p.cpu_times()
        total += t.user + t.system
    return total


def throughput(url: str, keys: ClientKeys, client: Client, args: argparse.Namespace, controller_pid: int, host_pids: list[int]) -> dict[str, Any]:
    count = 50 if args.quick else args.slices
    messages = [CreateSlice(spec=mixed_doc(f"e2e-{i}", 10)) for i in range(count)]
    controller, hosts = [psutil.Process(controller_pid)], [psutil.Process(pid) for pid in host_pids]
    cpu0, hosts0 = cpu_seconds(controller), cpu_seconds(hosts)
    with Pipeline(url, keys, connections=args.connections, window=args.window, timeout=120) as pipe:
        t0 = time.perf_counter()
        outcomes = pipe.run(messages)
        t_acked = time.perf_counter()
    failed = [o for o in outcomes if not o.ok]
    if failed:
        raise RuntimeError(f"{len(failed)} creates failed, e.g. {failed[0].result}")
    names = {f"e2e-{i}" for i in range(count)}
    t_running = wait_running(client, names, 120)
    cpu1, hosts1 = cpu_seconds(controller), cpu_seconds(hosts)
    slivers = sum(int(o.result.get("slivers_placed", 0)) for o in outcomes)
    wall = t_running - t0
    cpu = cpu1 - cpu0
    lat = sorted(o.ms for o in outcomes)
    return {
        "slices": count,
        "slivers": slivers,
        "seconds": round(wall, 3),
        "slivers_per_s": round(slivers / wall, 1),
        "acked_slivers_per_s": round(slivers / (t_acked - t0), 1),
        "create_p50_ms": round(median(lat), 2),
        "controller_cpu_cores": round(cpu / wall, 2),
        "controller_cpu_us_per_sliver": round(cpu / slivers * 1e6, 1),
        "hosts_cpu_cores": round((hosts1 - hosts0) / wall, 2),
        "hosts_cpu_us_per_sliver": round((hosts1 - hosts0) / slivers * 1e6, 1),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.quick:
        args.repeats = min(args.repeats, 2)
    cluster = BenchCluster(nodes=cluster_size(args), topology=args.topology, per_process=args.per_process, agent_state=args.agent_state == "disk", curve=not args.no_curve, keep=args.keep, agents_nice=args.agents_nice)
    nodes, sites = len(cluster.nodes), cluster.sites
    with cluster:
        t0 = time.perf_counter()
        url = cluster.start()
        startup = time.perf_counter() - t0
        hosts = len(cluster.hosts)
        with cluster.client(timeout=30) as client:
            hundred, distinct = slice100(client, sites, args.repeats)
            tp = throughput(url, cluster.admin_keys(), client, args, cluster.controller.pid, [h.pid for h in cluster.hosts])
        downs = len(cluster.log_lines("controller.log", " is down"))
    s100 = median(hundred)
    goals = [Goal("slivers/s, create -> running", tp["slivers_per_s"], GOAL_RATE, True), Goal("100-location slice running", round(s100, 3), GOAL_SLICE100, False, " s")]
    where = args.topology or "built-in catalogue"
    measured = [
        ("cluster", f"{nodes:,} simulated nodes at {sites} sites ({where}), {hosts} agent host processes (agent state on {args.agent_state}); all registered in {startup:.1f} s"),
        ("transport", "plaintext (--no-curve: benchmark only)" if args.no_curve else "CURVE on every socket"),
        ("simulated machines", f"at nice {args.agents_nice}" + (" (below the controller: --agents-nice)" if args.agents_nice else ", sharing the cores with the controller")),
        ("throughput run", f"{tp['slices']} slices x 10 slivers, {args.connections} pipelined clients x {args.window} outstanding"),
        ("slivers/s create -> running", f"{tp['slivers_per_s']:,.0f} ({tp['slivers']} slivers in {tp['seconds']:.2f} s)"),
        ("slivers/s create acknowledged", f"{tp['acked_slivers_per_s']:,.0f} (create p50 {tp['create_p50_ms']:.1f} ms)"),
        ("controller CPU during run", f"{tp['controller_cpu_cores']:.2f} cores ({tp['controller_cpu_us_per_sliver']:.0f} us a sliver)"),
        ("simulated machines' CPU during run", f"{tp['hosts_cpu_cores']:.2f} cores ({tp['hosts_cpu_us_per_sliver']:.0f} us a sliver), all {hosts} host processes"),
        ("nodes marked down during the run", f"{downs} (agent hosts too busy to heartbeat in time)" if downs else "0"),
        ("100-location slice", f"median {s100:.3f} s, max {max(hundred):.3f} s over {len(hundred)} (distinct: {distinct})"),
    ]
    report(args, "e2e: create -> running through the control plane", ANCHORS, measured, goals)
    return {
        "benchmark": "e2e",
        "curve": not args.no_curve,
        "nodes": nodes,
        "sites": sites,
        "topology": args.topology,
        "slivers_per_s": tp["slivers_per_s"],
        "slice100_seconds": round(s100, 3),
        "slice100_max_seconds": round(max(hundred), 3),
        "slice100_distinct": distinct,
        "throughput": tp,
        "startup_seconds": round(startup, 2),
        "agent_state": args.agent_state,
        "agents_nice": args.agents_nice,
        "false_downs": downs,
        "goals_met": all(g.met for g in goals),
        "machine": machine_json(),
    }
