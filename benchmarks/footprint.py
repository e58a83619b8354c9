"""Footprint: the RSS of an idle real agent, and of the controller per 1,000 nodes and per
10,000 slivers.

The agent is ``slicemesh agent`` as an operator runs it (its own process, a config file, a
state directory), with the ``sim`` backend for both isolation kinds, registered with a
controller and left idle. The controller's figures are differences: its RSS with no nodes,
then with N simulated nodes connected and heartbeating for ``--settle`` seconds (long enough
for the controller to return what the registration burst freed), then with slices holding S
slivers on them. Beside them, the transport alone (``benchmarks.zmqfloor``): what libzmq holds
per connection at first and once its queues have cycled, which no controller code can undercut.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from typing import Any

import yaml

from benchmarks import zmqfloor
from benchmarks.common import ANCHORS, BenchCluster, Goal, Pipeline, machine_json, mixed_doc, report, rss_mib, stop_process
from slices.isolation import ISOLATIONS
from slices.protocol import CreateSlice, ListNodes, MakeToken
from slices.waiting import wait_until
from slices.wire import to_wire

GOAL_AGENT_MIB = 50.0
GOAL_CONTROLLER_PER_1000_MIB = 25.0  # issue 12


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--nodes", type=int, default=1000, help="simulated nodes for the controller figure (default 1000)")
    p.add_argument("--slivers", type=int, default=10_000, help="slivers placed for the controller figure (default 10000)")
    p.add_argument("--idle", type=float, default=5.0, help="seconds the agent idles before its RSS is read (default 5)")
    p.add_argument("--settle", type=float, default=15.0, help="seconds the nodes heartbeat before the controller's RSS is read (default 15)")
    p.add_argument("--floor-connections", type=int, default=300, help="DEALERs for the transport-alone figure (default 300; 0: skip it)")
    p.add_argument("--floor-rounds", type=int, default=520, help="round trips per DEALER for the transport's steady figure (default 520: libzmq's queues cycle every 256)")


def agent_rss(cluster: BenchCluster, idle: float) -> tuple[float, dict[str, Any]]:
    """Start ``slicemesh agent`` against the cluster's controller; its RSS once registered and idle."""
    state = cluster.dir / "real-agent"
    config = cluster.dir / "agent.yaml"
    with cluster.client() as c:
        token = c.call(MakeToken(node="footprint-agent", ttl=600)).token
    config.write_text(
        yaml.safe_dump(
            {
                "controller": cluster.url,
                "name": "footprint-agent",
                "site": "footprint",
                "location": {"city": "Princeton", "country": "US", "region": "north-america", "lat": 40.34, "lon": -74.65},
                "capacity": {"cpu": 4, "memory": "8Gi", "disk": "100Gi"},
                "backends": dict.fromkeys(ISOLATIONS, "sim"),
                "controller_key": str(cluster.dir / "keys" / "controller.key"),
                "enrol_token": token,
                "state_dir": str(state),
                "log_level": "warning",
            }
        )
    )
    with open(cluster.dir / "agent.log", "ab") as logf:
        proc = subprocess.Popen([sys.executable, "-m", "slices.cli", "agent", "--config", str(config)], stdout=logf, stderr=logf, stdin=subprocess.DEVNULL)
    try:
        with cluster.client(timeout=10) as c:

            def registered() -> bool:
                if proc.poll() is not None:
                    raise RuntimeError(f"the agent exited with code {proc.returncode}; see {cluster.dir / 'agent.log'}")
                return any(n["name"] == "footprint-agent" and n["state"] == "up" for n in to_wire(c.call(ListNodes(rows="arrays")).nodes))

            wait_until(registered, 30, "the agent to register")
            time.sleep(idle)
            node = next(n for n in to_wire(c.call(ListNodes(rows="arrays")).nodes) if n["name"] == "footprint-agent")
        return rss_mib(proc.pid), {"backends": node["backends"], "state": node["state"]}
    finally:
        stop_process(proc)


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.quick:
        args.nodes = min(args.nodes, 100)
        args.slivers = min(args.slivers, 1000)
        args.idle = min(args.idle, 1.0)
        args.settle = min(args.settle, 2.0)
        args.floor_connections = min(args.floor_connections, 50)
    cluster = BenchCluster(nodes=args.nodes, agent_state=False)
    with cluster:
        url = cluster.start_controller()
        time.sleep(0.5)
        pid = cluster.controller.pid
        empty = rss_mib(pid)
        agent, agent_node = agent_rss(cluster, args.idle)
        cluster.start_agents()
        samples = []
        for _ in range(max(1, round(args.settle))):
            time.sleep(args.settle / max(1, round(args.settle)))
            samples.append(rss_mib(pid))
        with_nodes = samples[-1]
        slices = args.slivers // 10
        with Pipeline(url, cluster.admin_keys(), connections=4, window=16, timeout=300) as pipe:
            outcomes = pipe.run([CreateSlice(spec=mixed_doc(f"fp-{i}", 10)) for i in range(slices)])
        placed = sum(int(o.result.get("slivers_placed", 0)) for o in outcomes if o.ok)
        time.sleep(2.0)  # reports and state flushes settle
        with_slivers = rss_mib(pid)
    floor = zmqfloor.measure(args.floor_connections, args.floor_rounds) if args.floor_connections > 0 else None
    n = len(cluster.nodes)
    per_1000_nodes = (with_nodes - empty) / (n / 1000)
    peak_per_1000 = (max(samples) - empty) / (n / 1000)
    per_10000_slivers = (with_slivers - with_nodes) / (placed / 10_000) if placed else 0.0
    result = {
        "benchmark": "footprint",
        "agent_rss_mib": round(agent, 1),
        "agent_backends": agent_node["backends"],
        "controller_rss_mib_empty": round(empty, 1),
        "controller_rss_mib_with_nodes": round(with_nodes, 1),
        "controller_rss_mib_with_slivers": round(with_slivers, 1),
        "controller_rss_mib_per_1000_nodes": round(per_1000_nodes, 2),
        "controller_rss_mib_per_1000_nodes_peak": round(peak_per_1000, 2),
        "settle_s": args.settle,
        "controller_rss_mib_per_10000_slivers": round(per_10000_slivers, 2),
        "nodes": n,
        "slivers": placed,
        "machine": machine_json(),
    }
    if floor is not None:
        result["transport_kib_per_connection_first"] = round(floor.first_kib, 1)
        result["transport_kib_per_connection_steady"] = round(floor.steady_kib, 1)
        result["transport_connections"] = floor.connections
        result["transport_rounds"] = floor.rounds
    goals = [
        Goal("idle agent RSS", round(agent, 1), GOAL_AGENT_MIB, False, " MiB"),
        Goal("controller per 1,000 connected agents", round(per_1000_nodes, 1), GOAL_CONTROLLER_PER_1000_MIB, False, " MiB"),
    ]
    result["goals_met"] = all(g.met for g in goals)
    measured = [
        ("idle agent (slicemesh agent, sim backends)", f"{agent:.1f} MiB RSS after {args.idle:g} s idle, registered"),
        ("controller, no nodes", f"{empty:.1f} MiB"),
        (f"controller, {n:,} nodes, {args.settle:g} s of heartbeats", f"{with_nodes:.1f} MiB: {per_1000_nodes:.2f} MiB per 1,000 nodes (highest sample {peak_per_1000:.2f})"),
        (f"controller, + {placed:,} slivers", f"{with_slivers:.1f} MiB: {per_10000_slivers:.2f} MiB per 10,000 slivers"),
    ]
    if floor is not None:
        measured += [
            (f"transport alone, {floor.connections} peers, 1 round trip", f"{floor.first_kib:.1f} KiB per connection ({floor.per_1000_mib(floor.first_kib):.1f} MiB per 1,000)"),
            (f"transport alone, {floor.rounds} round trips each", f"{floor.steady_kib:.1f} KiB per connection ({floor.per_1000_mib(floor.steady_kib):.1f} MiB per 1,000)"),
        ]
    report(args, "footprint: memory of the agent and the controller", ANCHORS + "; PlanetLab's NodeManager ran on every node beside the slivers", measured, goals)
    return result
