"""Churn: slices created and deleted per second at steady state, and their latency as a client
sees it.

A population of live 10-sliver slices (region mix, ``distinct: site``, ``min_distance_km``) is
created first; then several clients, each with one request outstanding at a time (a closed loop,
like people at ``slicemesh create``/``delete``), replace their oldest slice with a new one again
and again for the measured seconds. The controller, the agents and the clients are separate
processes over real ZeroMQ on loopback.
"""

from __future__ import annotations

import argparse
import os
import time
from collections import deque
from typing import Any

from benchmarks.common import ANCHORS, BenchCluster, Goal, Pipeline, add_curve_argument, machine_json, median, mixed_doc, percentile, report
from slices.codec import decode, encode, new_id
from slices.errors import ProtocolError
from slices.protocol import CreateSlice, DeleteSlice, Message, Ok
from slices.transport import ClientKeys, Dealer, Poller

#: Latency goals that follow from the e2e goals: a 10-sliver create well inside a second.
GOAL_CREATE_P99_MS = 100.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_curve_argument(p)
    p.add_argument("--nodes", type=int, default=None, help="simulated nodes (default 1000; with --topology, every machine in it)")
    p.add_argument("--seconds", type=float, default=30.0, help="steady-state seconds measured (default 30)")
    p.add_argument("--topology", default=None, help="CSV of sites, e.g. ../shared/data/mlab-sites.csv")
    p.add_argument("--clients", type=int, default=8, help="concurrent clients, one request outstanding each (default 8)")
    p.add_argument("--population", type=int, default=200, help="live slices kept at steady state (default 200)")
    p.add_argument("--agent-state", choices=("disk", "memory"), default="disk", help="as for `bench e2e`")


class ClosedLoop:
    """``clients`` connections; each alternates create (new slice) and delete (its oldest)."""

    def __init__(self, url: str, keys: ClientKeys, clients: int, owned: list[deque[str]], start: int) -> None:
        self.dealers = [Dealer(url, f"churn-{os.getpid()}-{i}", keys) for i in range(clients)]
        self.poller = Poller()
        for d in self.dealers:
            self.poller.add(d)
        self.owned = owned
        self.counter = start
        self.pending: dict[str, tuple[int, str, float, str]] = {}  # id -> (client, kind, sent, name)
        self.next_kind = ["create"] * clients
        self.lat: dict[str, list[float]] = {"create": [], "delete": []}
        self.errors: list[str] = []

    def _send(self, c: int) -> None:
        kind = self.next_kind[c]
        msg: Message
        if kind == "create" or not self.owned[c]:
            kind = "create"
            name = f"churn-{self.counter}"
            self.counter += 1
            msg = CreateSlice(spec=mixed_doc(name, 10))
        else:
            name = self.owned[c].popleft()
            msg = DeleteSlice(name=name)
        msg_id = new_id()
        self.pending[msg_id] = (c, kind, time.perf_counter(), name)
        self.dealers[c].send(encode(msg, id=msg_id, sender=self.dealers[c].identity))

    def run(self, seconds: float) -> float:
        for c in range(len(self.dealers)):
            self._send(c)
        t0 = time.perf_counter()
        end = t0 + seconds
        stall = time.monotonic() + 30
        while time.perf_counter() < end:
            if time.monotonic() > stall:
                raise TimeoutError("no reply for 30 s")
            for dealer in self.poller.poll(0.2):
                assert isinstance(dealer, Dealer)
                while (frame := dealer.recv()) is not None:
                    try:
                        env = decode(frame)
                    except ProtocolError:
                        continue
                    got = self.pending.pop(env.id, None)
                    if got is None:
                        continue
                    stall = time.monotonic() + 30
                    c, kind, sent, name = got
                    if isinstance(env.msg, Ok):
                        self.lat[kind].append((time.perf_counter() - sent) * 1000)
                        if kind == "create":
                            self.owned[c].append(name)
                    else:
                        self.errors.append(f"{kind} {name}: {getattr(env.msg, 'reason', env.msg)}")
                    self.next_kind[c] = "delete" if kind == "create" else "create"
                    if time.perf_counter() < end:
                        self._send(c)
        wall = time.perf_counter() - t0
        drain = time.monotonic() + 10  # let the last replies in, uncounted
        while self.pending and time.monotonic() < drain:
            for dealer in self.poller.poll(0.2):
                assert isinstance(dealer, Dealer)
                while (frame := dealer.recv()) is not None:
                    try:
                        self.pending.pop(decode(frame).id, None)
                    except ProtocolError:
                        pass
        return wall

    def close(self) -> None:
        for d in self.dealers:
            d.close()


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.quick:
        nodes: int | None = args.nodes or 100
        args.seconds = min(args.seconds, 3.0)
        args.population = min(args.population, 20)
        args.clients = min(args.clients, 4)
    else:
        nodes = args.nodes if (args.nodes or args.topology) else 1000
    cluster = BenchCluster(nodes=nodes, topology=args.topology, agent_state=args.agent_state == "disk", curve=not args.no_curve)
    with cluster:
        url = cluster.start()
        owned: list[deque[str]] = [deque() for _ in range(args.clients)]
        keys = cluster.admin_keys()
        with Pipeline(url, keys, connections=4, window=16, timeout=120) as pipe:
            outcomes = pipe.run([CreateSlice(spec=mixed_doc(f"churn-{i}", 10)) for i in range(args.population)])
        for o in outcomes:
            if o.ok:
                owned[o.index % args.clients].append(f"churn-{o.index}")
        time.sleep(1.0)  # let the agents settle the population
        downs0 = len(cluster.log_lines("controller.log", " is down"))
        loop = ClosedLoop(url, keys, args.clients, owned, args.population)
        try:
            wall = loop.run(args.seconds)
        finally:
            loop.close()
        downs = len(cluster.log_lines("controller.log", " is down")) - downs0
    creates, deletes = loop.lat["create"], loop.lat["delete"]
    result = {
        "benchmark": "churn",
        "curve": not args.no_curve,
        "nodes": len(cluster.nodes),
        "sites": cluster.sites,
        "topology": args.topology,
        "seconds": round(wall, 1),
        "clients": args.clients,
        "population": args.population,
        "creates_per_s": round(len(creates) / wall, 1),
        "deletes_per_s": round(len(deletes) / wall, 1),
        "slivers_per_s": round(10 * (len(creates) + len(deletes)) / wall, 1),
        "create_p50_ms": round(median(creates), 2),
        "create_p99_ms": round(percentile(creates, 99), 2),
        "delete_p50_ms": round(median(deletes), 2),
        "delete_p99_ms": round(percentile(deletes, 99), 2),
        "errors": len(loop.errors),
        "false_downs": downs,
        "agent_state": args.agent_state,
        "machine": machine_json(),
    }
    goals = [Goal("create p99", result["create_p99_ms"], GOAL_CREATE_P99_MS, False, " ms"), Goal("errors", len(loop.errors), 0, False)]
    result["goals_met"] = all(g.met for g in goals)
    measured = [
        ("cluster", f"{len(cluster.nodes):,} simulated nodes at {cluster.sites} sites ({args.topology or 'built-in catalogue'}), agent state on {args.agent_state}"),
        ("transport", "plaintext (--no-curve: benchmark only)" if args.no_curve else "CURVE on every socket"),
        ("load", f"{args.clients} closed-loop clients, {args.population} live 10-sliver slices, {wall:.0f} s"),
        ("slices created / deleted per s", f"{result['creates_per_s']:,.1f} / {result['deletes_per_s']:,.1f} ({result['slivers_per_s']:,.0f} sliver changes/s)"),
        ("create latency", f"p50 {result['create_p50_ms']:.1f} ms, p99 {result['create_p99_ms']:.1f} ms"),
        ("delete latency", f"p50 {result['delete_p50_ms']:.1f} ms, p99 {result['delete_p99_ms']:.1f} ms"),
        ("errors, nodes marked down", f"{len(loop.errors)}{' e.g. ' + loop.errors[0][:120] + '...' if loop.errors else ''}; {downs} nodes marked down"),
    ]
    report(args, "churn: slices created and deleted at steady state", ANCHORS, measured, goals)
    return result
