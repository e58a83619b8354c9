"""What telling a slice's addresses costs the controller (controller/peers.py): for a slice
with one sliver on each of N nodes, the work of ``Server._push`` for the addresses alone
(``peers.changes_for`` and the ``Desired`` it encodes) over all N nodes, in three cases:

* **whole**: every node is told every address (a slice just made, a restarted controller);
* **one change**: one sliver got a new address; each node is told that one entry;
* **made**: the slice's addresses arrive in ``ROUNDS`` batches (its slivers starting), every
  node told after each: what making it costs, from no address to all.

The cluster is a stand-in holding only what ``peers`` reads (slices, slivers, node records);
the bookkeeping and the encoding are the controller's own. Each case is timed ``--repeat``
times; the table gives min / median / max.
"""

from __future__ import annotations

import argparse
import time
from types import SimpleNamespace
from typing import Any

from benchmarks.common import Goal, machine_json, median, report
from controller import peers
from slices.codec import encode
from slices.protocol import Desired

SIZES = (1000, 2000, 5000, 10_000)
ROUNDS = 10  # batches a slice's addresses arrive in, in the "made" case
CHANGE_GOAL_MS = 100.0  # one changed address told to a 2,000-node slice, within a push turn or two
CHANGE_GOAL_AT = 2000


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sizes", default=",".join(map(str, SIZES)), help="slice sizes, comma-separated (default %(default)s)")
    p.add_argument("--repeat", type=int, default=3, help="times each case is timed (default 3)")


def address(i: int) -> str:
    return f"10.{i // 250}.{i % 250}.2"


def cluster_of(n: int) -> tuple[Any, list[Any]]:
    ids = [f"big-{i}" for i in range(n)]
    slivers = {sid: SimpleNamespace(spec=SimpleNamespace(slice="big"), node=f"n{i}", address=address(i)) for i, sid in enumerate(ids)}
    cluster = SimpleNamespace(slices={"big": SimpleNamespace(slivers=ids, spec=SimpleNamespace(open_to_slices=False))}, slivers=slivers, peer_book={}, dirty_nodes={}, readdressed=set())
    nodes = [SimpleNamespace(name=f"n{i}", slivers={sid}, peers_sent={}) for i, sid in enumerate(ids)]
    return cluster, nodes


def push_all(cluster: Any, nodes: list[Any]) -> tuple[float, int, int]:
    """(seconds, entries, bytes) of telling every node what it has not been told."""
    started, entries, size = time.perf_counter(), 0, 0
    peers.mark_readdressed(cluster)
    for rec in nodes:
        kept, changes, opened = peers.changes_for(cluster, rec, set())
        msg = Desired(generation=1, open_slices=opened, peer_sets=True, peer_slices=kept, peer_changes=peers.on_wire(cluster, changes))
        size += len(encode(msg, id="g1.0", sender="controller"))
        entries += sum(len(c.peers) + len(c.gone) for c in changes)
    return time.perf_counter() - started, entries, size


def made(n: int) -> tuple[float, int, int]:
    """(seconds, entries, bytes) of making the slice: its addresses in ``ROUNDS`` batches."""
    cluster, nodes = cluster_of(n)
    for sliver in cluster.slivers.values():
        sliver.address = None
    seconds, entries, size = push_all(cluster, nodes)
    for r in range(ROUNDS):
        for i in range(r * n // ROUNDS, (r + 1) * n // ROUNDS):
            cluster.slivers[f"big-{i}"].address = address(i)
        peers.address_changed(cluster, "big")
        took, more, bigger = push_all(cluster, nodes)
        seconds, entries, size = seconds + took, entries + more, size + bigger
    return seconds, entries, size


def measure(n: int, repeat: int) -> dict[str, Any]:
    whole, change, making = [], [], []
    for k in range(repeat):
        cluster, nodes = cluster_of(n)
        seconds, whole_entries, whole_bytes = push_all(cluster, nodes)
        whole.append(seconds)
        cluster.slivers["big-7"].address = f"10.255.{k}.9"
        peers.address_changed(cluster, "big")
        seconds, change_entries, change_bytes = push_all(cluster, nodes)
        change.append(seconds)
        seconds, made_entries, made_bytes = made(n)
        making.append(seconds)
    return {
        "slivers": n,
        "whole_s": whole,
        "whole_entries": whole_entries,
        "whole_mb": whole_bytes / 1e6,
        "change_s": change,
        "change_entries": change_entries,
        "change_mb": change_bytes / 1e6,
        "made_s": making,
        "made_entries": made_entries,
        "made_mb": made_bytes / 1e6,
    }


def _spread(values: list[float], scale: float = 1.0, unit: str = "") -> str:
    return " / ".join(f"{v * scale:,.3g}{unit}" for v in (min(values), median(values), max(values)))


def run(args: argparse.Namespace) -> dict[str, Any]:
    sizes = [int(s) for s in str(args.sizes).split(",") if s.strip()]
    if args.quick:
        sizes, args.repeat = [min([*sizes, 200])], 1
    rows = [measure(n, max(1, args.repeat)) for n in sizes]
    measured: list[tuple[str, str]] = []
    for r in rows:
        n = r["slivers"]
        measured += [
            (f"{n} slivers: whole set to {n} nodes (min / median / max)", f"{_spread(r['whole_s'], unit=' s')}, {r['whole_entries']:,} entries, {r['whole_mb']:.1f} MB"),
            (f"{n} slivers: one changed address to {n} nodes", f"{_spread(r['change_s'], 1000, ' ms')}, {r['change_entries']:,} entries, {r['change_mb']:.2f} MB"),
            (f"{n} slivers: made, its addresses in {ROUNDS} rounds", f"{_spread(r['made_s'], unit=' s')}, {r['made_entries']:,} entries, {r['made_mb']:.1f} MB"),
        ]
    at = next((r for r in rows if r["slivers"] == CHANGE_GOAL_AT), rows[-1])
    goals = [Goal(f"one changed address, {at['slivers']}-node slice (worst run)", max(at["change_s"]) * 1000, CHANGE_GOAL_MS, at_least=False, unit=" ms")]
    report(args, "telling a slice's addresses (controller/peers.py)", "every node of a slice learns every address of it: N^2 entries, each change packed once", measured, goals)
    return {"sizes": rows, "machine": machine_json(), "goals": {g.label: g.met for g in goals}}
