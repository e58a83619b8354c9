"""Responsiveness at testbed scale: one controller, many simulated nodes, several users at once.

Phase 1, on ``--nodes`` simulated nodes (default 10,000): for ``--seconds``, background
clients create, wait for, show and delete a slice with a sliver on every node and slices of
1,000 slivers, list every node, every slice and every sliver, while another client pings
every ``--ping-interval`` s. Measured: the ping latencies, each ``show`` of the big slice and
each ``nodes`` listing (client side: request, reply, decode), and nodes the controller
marked down meanwhile (every one is false: the agents run).

Phase 2, on ``--cli-nodes`` simulated nodes (default 1,000): ``slicemesh create --wait`` of a
slice with a sliver on each, run as a user types it (a new process each time, timed from start
to exit), ``--cli-repeats`` times.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import yaml

from benchmarks.common import BenchCluster, Goal, add_keep_argument, machine_json, median, percentile, report, rss_mib, slice_doc
from slices import identity
from slices.client import Client
from slices.protocol import CreateSlice, DeleteSlice, ListNodes, ListSlices, ListSlivers, Ping, ShowSlice

GOAL_PING_P99_MS = 50.0
GOAL_SHOW_S = 0.5
GOAL_NODES_S = 0.5
GOAL_CREATE_WAIT_S = 1.0
ANCHOR = "PlanetLab: slices with a sliver on every node (~1,000 nodes); the issue's goals at 10,000 simulated nodes"
ROOT = Path(__file__).resolve().parent.parent


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_keep_argument(p)
    p.add_argument("--nodes", type=int, default=10_000, help="simulated nodes in phase 1 (default 10000)")
    p.add_argument("--seconds", type=float, default=60.0, help="length of phase 1 (default 60)")
    p.add_argument("--mid", type=int, default=1000, help="slivers in the middle-sized slices (default 1000)")
    p.add_argument("--ping-interval", type=float, default=0.02, help="seconds between pings (default 0.02)")
    p.add_argument("--cli-nodes", type=int, default=1000, help="simulated nodes in phase 2 (default 1000)")
    p.add_argument("--cli-repeats", type=int, default=5, help="`create --wait` runs in phase 2 (default 5)")
    p.add_argument(
        "--agents-nice",
        type=int,
        default=19,
        help="CPU priority the simulated machines' host processes run below the controller (default 19, the lowest: on a testbed they are other machines, and at 10 they still held the controller off the cores a quarter of the time; 0 to share the cores equally)",
    )
    p.add_argument(
        "--clients-nice",
        type=int,
        default=0,
        help="niceness of the four load clients' processes (default 0: the controller's own; the pinging client always runs at 0)",
    )


@dataclass
class Timings:
    """Latencies (seconds) by what was asked, from several threads; errors kept, not raised."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    seen: dict[str, list[float]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def timed(self, what: str, fn: Callable[[], Any], c: Client | None = None) -> Any:
        """``fn``'s latency under ``what``; with ``c`` (the client it calls through), also until
        its reply arrived, under ``what (reply in)``: the rest is the client's decoding."""
        t0 = time.perf_counter()
        out = fn()
        took = time.perf_counter() - t0
        with self.lock:
            self.seen.setdefault(what, []).append(took)
            if c is not None:
                self.seen.setdefault(f"{what} (reply in)", []).append(c.received - t0)
        return out

    def fail(self, what: str, exc: BaseException) -> None:
        with self.lock:
            self.errors.append(f"{what}: {type(exc).__name__}: {exc}")

    def get(self, what: str) -> list[float]:
        return sorted(self.seen.get(what, []))


def tiny(name: str, count: int) -> dict[str, Any]:
    """A slice that fits beside the others on every node: placement, not capacity, is measured."""
    return slice_doc(name, count, distinct="none", cpu=0.01, memory="4Mi")


def lister(t: Timings, n: int) -> Callable[[Client, int], None]:
    def body(c: Client, i: int) -> None:
        got = t.timed("nodes", lambda: c.call(ListNodes(rows="arrays"), timeout=120), c)
        if got.total != n or len(got.nodes) != n:
            raise RuntimeError(f"nodes gave {len(got.nodes)} of {got.total}, not {n}")
        t.timed("list", lambda: c.call(ListSlices(), timeout=120))
        if i % 3 == 0:
            t.timed("slivers", lambda: c.call(ListSlivers(rows="arrays"), timeout=120))

    return body


def cycle(t: Timings, prefix: str, count: int, shows: int, show_label: str) -> Callable[[Client, int], None]:
    """Create a slice, wait until it runs, show it ``shows`` times, delete it and wait."""

    def body(c: Client, i: int) -> None:
        name = f"{prefix}-{i}"
        # brief, as ``slicemesh create --wait`` asks: the rows come with the shows that follow
        t.timed(f"create {prefix}", lambda: c.call(CreateSlice(spec=tiny(name, count), brief=True), timeout=120))
        p = c.wait(name, "settled", 300)
        if p.state != "running":
            raise RuntimeError(f"{name} settled {p.state} with {p.running} of {p.wanted} running")
        for _ in range(shows):
            view = t.timed(show_label, lambda: c.call(ShowSlice(name=name, rows="arrays"), timeout=120), c)
            if len(view.slivers) != count:
                raise RuntimeError(f"show {name} gave {len(view.slivers)} slivers, not {count}")
        t.timed(f"delete {prefix}", lambda: c.call(DeleteSlice(name=name), timeout=120))
        c.wait(name, "deleted", 300)

    return body


def client_process(role: str, go: Any, n: int, mid: int, stop: Any, out: Any, nice: int = 0) -> None:
    """One user, in a process of its own (a client decoding a 10,000-row reply must not hold
    the measuring process's interpreter): loops over its part until ``stop``; sends its timings.
    Started before the cluster, it gets the controller's address and an identity from ``go``:
    four interpreters importing at once starved the simulated machines (below the controller
    in priority) of heartbeats for seconds on a busy host; that start-up is not the load."""
    os.nice(nice)
    t = Timings()
    body = {
        "big": lambda: cycle(t, "big", n, 3, "show big"),
        "mid": lambda: cycle(t, "mid", mid, 2, "show mid"),
        "midb": lambda: cycle(t, "midb", mid, 2, "show mid"),
        "lister": lambda: lister(t, n),
    }[role]()
    url, ident = go.get()
    if url is None:
        return
    with Client(url, identity=ident, timeout=120) as c:
        i = 0
        while not stop.is_set():
            try:
                body(c, i)
            except Exception as exc:  # a failure is a figure of the run, reported
                t.fail(role, exc)
                stop.wait(1.0)
            i += 1
    out.put((t.seen, t.errors))


def phase1(args: argparse.Namespace, n: int, mid: int, seconds: float) -> dict[str, Any]:
    t = Timings()
    cluster = BenchCluster(nodes=n, agents_nice=args.agents_nice, keep=args.keep)
    mp = multiprocessing.get_context("spawn")
    stop, out, go = mp.Event(), mp.Queue(), mp.Queue()
    procs = [mp.Process(target=client_process, args=(role, go, n, mid, stop, out, args.clients_nice), daemon=True) for role in ("big", "mid", "midb", "lister")]
    for proc in procs:
        proc.start()
    with cluster:
        t0 = time.perf_counter()
        try:
            url = cluster.start()
        except BaseException:
            for _ in procs:
                go.put((None, None))
            raise
        startup = time.perf_counter() - t0
        assert cluster.identity is not None
        ctl = psutil.Process(cluster.controller.pid)
        for _ in procs:
            go.put((url, cluster.identity))
        cpu0 = ctl.cpu_times()
        with cluster.client(timeout=10) as c:
            period_at_start = told_period(c)
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                try:
                    t.timed("ping", lambda: c.call(Ping(), timeout=10))
                except Exception as exc:
                    t.fail("ping", exc)
                time.sleep(args.ping_interval)
            # the controller's own account of the run's last minute (controller/userwaits.py)
            last = c.call(Ping(), timeout=30)
            period_at_end = told_period(c)
        cpu1 = ctl.cpu_times()
        rss = rss_mib(ctl.pid)
        stop.set()
        for _ in procs:
            seen, errors = out.get(timeout=600)
            for what, values in seen.items():
                t.seen.setdefault(what, []).extend(values)
            t.errors.extend(errors)
        for proc in procs:
            proc.join(30)
        downs = cluster.log_lines("controller.log", " is down")
        # which side was late: the agents say when they heard nothing for long
        silent = [line for log in sorted(cluster.dir.glob("agents-*.log")) for line in cluster.log_lines(log.name, "controller silent")] if downs else []
    cpu = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
    return {
        "timings": t, "startup_s": round(startup, 1), "false_downs": len(downs), "down_lines": downs[:20] + silent[:10], "controller_cpu_cores": round(cpu / seconds, 2), "controller_rss_mib": round(rss, 1),
        "heartbeat_period_s": [period_at_start, period_at_end],
        "controller_user_wait_max_ms": last.user_wait_max_ms, "controller_user_waits_over_50ms": last.user_waits_over_50ms,
    }  # fmt: skip


def told_period(c: Client) -> float:
    """The heartbeat period the first 100 nodes were last told (their median). The controller's
    back-pressure (controller/registry.py) stretches it while the agents' queue stays full, as
    after thousands register or under this load, and the figures are measured under that many
    fewer heartbeats. 100 nodes, not all (as ``bench heartbeat`` takes): a 10,000-row listing
    here would be part of the load it measures."""
    nodes = c.call(ListNodes(limit=100, rows="arrays"), timeout=30).nodes
    return round(median([v.heartbeat_period for v in nodes]), 2) if nodes else 0.0


def phase2(n: int, repeats: int, agents_nice: int, *, keep: bool = False) -> list[float]:
    """``slicemesh create --wait`` of an ``n``-sliver slice, as a user types it, ``repeats`` times."""
    cluster = BenchCluster(nodes=n, agents_nice=agents_nice, keep=keep)
    times: list[float] = []
    with cluster, tempfile.TemporaryDirectory(prefix="smresp") as tmp:
        cluster.start()
        assert cluster.identity is not None
        ident = identity.write(cluster.identity, path=Path(tmp) / "admin.yaml")
        env = {**os.environ, "SLICEMESH_IDENTITY": str(ident)}
        with cluster.client(timeout=60) as c:
            for i in range(repeats):
                name = f"everywhere-{i}"
                spec = Path(tmp) / f"{name}.yaml"
                spec.write_text(yaml.safe_dump(tiny(name, n)))
                t0 = time.perf_counter()
                proc = subprocess.run([sys.executable, "-m", "slices.cli", "create", "--wait", str(spec)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
                took = time.perf_counter() - t0
                if proc.returncode != 0:
                    raise RuntimeError(f"create --wait exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
                times.append(took)
                c.call(DeleteSlice(name=name), timeout=60)
                c.wait(name, "deleted", 120)
    return times


def stats(values: list[float], scale: float = 1.0) -> dict[str, float]:
    if not values:
        return {"count": 0}
    return {
        "count": len(values),
        "p50": round(median(values) * scale, 3),
        "p90": round(percentile(values, 90) * scale, 3),
        "p99": round(percentile(values, 99) * scale, 3),
        "max": round(max(values) * scale, 3),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    quick = bool(getattr(args, "quick", False))
    n = min(args.nodes, 300) if quick else args.nodes
    mid = min(args.mid, n // 3) if quick else args.mid
    seconds = min(args.seconds, 8.0) if quick else args.seconds
    cli_nodes = min(args.cli_nodes, 100) if quick else args.cli_nodes
    repeats = min(args.cli_repeats, 2) if quick else args.cli_repeats
    p1 = phase1(args, n, mid, seconds)
    t: Timings = p1.pop("timings")
    cli = phase2(cli_nodes, repeats, args.agents_nice, keep=args.keep)
    ping, show, nodes = stats(t.get("ping"), 1000), stats(t.get("show big")), stats(t.get("nodes"))
    figures = {what: stats(t.get(what)) for what in sorted(t.seen) if what != "ping"}
    goals = [
        Goal("ping p99 while busy", ping.get("p99", float("inf")), GOAL_PING_P99_MS, False, " ms"),
        Goal("nodes marked down (all false)", p1["false_downs"], 0, False),
        Goal(f"show of a {n:,}-sliver slice, p90", show.get("p90", float("inf")), GOAL_SHOW_S, False, " s"),
        Goal(f"nodes of {n:,} nodes, p90", nodes.get("p90", float("inf")), GOAL_NODES_S, False, " s"),
        Goal(f"create --wait of {cli_nodes:,} slivers (CLI), max", round(max(cli), 3) if cli else float("inf"), GOAL_CREATE_WAIT_S, False, " s"),
        Goal("requests failed", len(t.errors), 0, False),
    ]
    measured = [
        ("cluster", f"{n:,} simulated nodes, all registered in {p1['startup_s']} s; {seconds:g} s of load"),
        ("load", f"a {n:,}-sliver slice and two {mid:,}-sliver slices created, waited for, shown and deleted in turn; all nodes, slices and slivers listed; a ping every {args.ping_interval:g} s; the simulated machines at nice {args.agents_nice} (below the controller), the load clients at nice {args.clients_nice}"),
        ("ping", f"{ping.get('count', 0)} pings: p50 {ping.get('p50')} ms, p99 {ping.get('p99')} ms, max {ping.get('max')} ms"),
        *[(what, f"{s['count']}x: p50 {s.get('p50')} s, p90 {s.get('p90')} s, max {s.get('max')} s") for what, s in figures.items()],
        ("heartbeat period told", f"{p1['heartbeat_period_s'][0]:g} s as the load began, {p1['heartbeat_period_s'][1]:g} s at its end (unstretched: max(heartbeat_period, nodes / heartbeat_rate))"),
        ("controller", f"{p1['controller_cpu_cores']} cores busy, {p1['controller_rss_mib']} MiB at the end"),
        ("users' socket unread", f"at most {p1['controller_user_wait_max_ms']:g} ms at a time, {p1['controller_user_waits_over_50ms']} times over 50 ms in the last minute (the controller's own figure: ping)"),
        (f"create --wait, {cli_nodes:,} nodes", ", ".join(f"{x:.3f}" for x in cli) + " s (a new CLI process each)"),
    ]
    if t.errors:
        measured.append(("errors", "; ".join(t.errors[:3])))
    report(args, "responsiveness: a big slice, many nodes, several users at once", ANCHOR, measured, goals)
    return {
        "benchmark": "responsiveness",
        "nodes": n,
        "seconds": seconds,
        "ping_ms": ping,
        "figures": figures,
        "create_wait_cli_s": [round(x, 3) for x in cli],
        "cli_nodes": cli_nodes,
        "agents_nice": args.agents_nice,
        "clients_nice": args.clients_nice,
        "errors": t.errors,
        **p1,
        "goals_met": all(g.met for g in goals),
        "machine": machine_json(),
    }
