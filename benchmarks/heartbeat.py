"""Heartbeat scale: many simulated nodes heartbeating to one controller for a while.

The agents run in a few host processes (each agent with its own DEALER socket and identity,
as ``slicemesh sim`` runs them) on the same 2-core machine as the controller, so they compete
with it for CPU. The controller adapts the period to the cluster size (period = max(
heartbeat_period, nodes / heartbeat_rate), as Nomad does); the table states the period in use.

A false down is a node the controller marked ``down`` although its agent kept running: every
agent runs for the whole measurement, so every "is down" in the controller's log is one, and
a final poll of every node must find them all ``up``.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import psutil

from benchmarks.common import ANCHORS, BenchCluster, Goal, add_keep_argument, machine_json, median, report
from controller.settings import ControllerSettings


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--nodes", type=int, default=None, help="simulated nodes (default 10000; with --topology, every machine in it)")
    p.add_argument("--seconds", type=float, default=120.0, help="how long to measure once every node is up (default 120)")
    p.add_argument("--topology", default=None, help="CSV of sites, e.g. ../shared/data/mlab-sites.csv")
    p.add_argument("--per-process", type=int, default=0, help="simulated agents per host process (default: 4 processes)")
    p.add_argument("--rate", type=float, default=None, help="controller heartbeat_rate budget (default: the controller's setting)")
    p.add_argument("--period", type=float, default=1.0, help="controller heartbeat_period for small clusters (default 1)")
    add_keep_argument(p)


def cpu_seconds(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.quick:
        nodes: int | None = args.nodes or 100
        args.seconds = min(args.seconds, 5.0)
    else:
        nodes = args.nodes if (args.nodes or args.topology) else 10_000
    settings: dict[str, Any] = {}
    if args.rate:
        settings["heartbeat_rate"] = args.rate
    cluster = BenchCluster(nodes=nodes, topology=args.topology, per_process=args.per_process, agent_state=True, controller=settings, heartbeat_period=args.period, keep=args.keep)
    with cluster:
        t0 = time.perf_counter()
        cluster.start()
        startup = time.perf_counter() - t0
        downs_before = len(cluster.log_lines("controller.log", " is down"))
        ctl = psutil.Process(cluster.controller.pid)
        hosts = [psutil.Process(p.pid) for p in cluster.hosts]
        c0, h0, w0 = cpu_seconds(ctl), sum(cpu_seconds(h) for h in hosts), time.perf_counter()
        peak_rss = 0.0
        end = w0 + args.seconds
        while (left := end - time.perf_counter()) > 0:
            time.sleep(min(1.0, left))
            peak_rss = max(peak_rss, ctl.memory_info().rss / 2**20)
            for p in cluster.procs:
                if p.poll() is not None:
                    raise RuntimeError(f"a benchmark process exited during the run; logs in {cluster.dir}")
        c1, h1, w1 = cpu_seconds(ctl), sum(cpu_seconds(h) for h in hosts), time.perf_counter()
        rss = ctl.memory_info().rss / 2**20
        host_rss = sum(h.memory_info().rss for h in hosts) / 2**20
        final = cluster.node_list()
        down_lines = cluster.log_lines("controller.log", " is down")
    wall = w1 - w0
    false_downs = len(down_lines) - downs_before
    down_now = sum(n["state"] != "up" for n in final)
    period = median(float(n["heartbeat_period"]) for n in final)
    cpu_cores = (c1 - c0) / wall
    pulses = ControllerSettings(**settings).heartbeat_pulses
    result = {
        "benchmark": "heartbeat",
        "nodes": len(cluster.nodes),
        "sites": cluster.sites,
        "topology": args.topology,
        "seconds": round(wall, 1),
        "false_downs": false_downs,
        "false_downs_during_startup": downs_before,
        "down_at_end": down_now,
        "heartbeat_period_s": round(period, 3),
        "heartbeats_per_s": round(len(final) / period, 1) if period else None,
        "heartbeat_pulses": pulses,
        "controller_cpu_cores": round(cpu_cores, 3),
        "controller_rss_mib": round(rss, 1),
        "controller_peak_rss_mib": round(peak_rss, 1),
        "agent_hosts": len(hosts),
        "agent_hosts_cpu_cores": round((h1 - h0) / wall, 3),
        "agent_hosts_rss_mib": round(host_rss, 1),
        "startup_seconds": round(startup, 1),
        "machine": machine_json(),
    }
    goals = [Goal("false downs", false_downs + down_now, 0, False), Goal("controller CPU", round(cpu_cores, 3), 1.0, False, " cores")]
    result["goals_met"] = all(g.met for g in goals)
    measured = [
        ("cluster", f"{len(cluster.nodes):,} simulated nodes at {cluster.sites} sites ({args.topology or 'built-in catalogue'}) in {len(hosts)} host processes; all up after {startup:.1f} s"),
        ("measured for", f"{wall:.0f} s after every node was up"),
        ("heartbeat period in use", f"{period:g} s (max(heartbeat_period, nodes / heartbeat_rate)): {result['heartbeats_per_s']:,} heartbeats/s"),
        ("answered", f"1 heartbeat in {pulses + 1} from an agent with nothing to report (heartbeat_pulses {pulses}: the others are pulses, unanswered)"),
        ("false downs", f"{false_downs} during the run ({down_now} down at the end; {downs_before} during start-up)"),
        ("controller CPU", f"{cpu_cores:.3f} cores"),
        ("controller RSS", f"{rss:.1f} MiB (peak {peak_rss:.1f})"),
        ("agent host processes", f"{result['agent_hosts_cpu_cores']:.2f} cores, {host_rss:.0f} MiB in all"),
    ]
    report(args, "heartbeat: many nodes, one controller", ANCHORS + "; Nomad adapts its heartbeat period with cluster size", measured, goals)
    return result
