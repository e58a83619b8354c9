"""What telling a slice's addresses costs the controller (controller/peers.py): for a slice
with one sliver on each of N nodes, the work of ``Server._push`` for the addresses alone
(``peers.changes_for`` and the ``Desired`` it encodes) over all N nodes, in three cases:

* **whole**: every node is told every address (a slice just made, a restarted controller);
* **one change**: one sliver got a new address; each node is told that one entry;
* **before (whole each change)**: what each change cost before addresses travelled as
  changes, i.e. the whole set again to every node.

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

SIZES = (256, 1000, 2000)
CHANGE_GOAL_MS = 100.0  # one changed address told to a 2,000-node slice, within a push turn or two


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sizes", default=",".join(map(str, SIZES)), help="slice sizes, comma-separated (default %(default)s)")
    p.add_argument("--repeat", type=int, default=3, help="times each case is timed (default 3)")


def cluster_of(n: int) -> tuple[Any, list[Any]]:
    ids = [f"big-{i}" for i in range(n)]
    slivers = {sid: SimpleNamespace(spec=SimpleNamespace(slice="big"), node=f"n{i}", address=f"10.{i // 250}.{i % 250}.2") for i, sid in enumerate(ids)}
    cluster = SimpleNamespace(slices={"big": SimpleNamespace(slivers=ids, spec=SimpleNamespace(open_to_slices=False))}, slivers=slivers, peer_book={}, dirty_nodes={})
    nodes = [SimpleNamespace(name=f"n{i}", slivers={sid}, peers_sent={}) for i, sid in enumerate(ids)]
    return cluster, nodes


def push_all(cluster: Any, nodes: list[Any]) -> tuple[float, int, int]:
    """(seconds, entries, bytes) of telling every node what it has not been told."""
    started, entries, size = time.perf_counter(), 0, 0
    for rec in nodes:
        kept, changes, opened = peers.changes_for(cluster, rec, set())
        msg = Desired(generation=1, open_slices=opened, peer_sets=True, peer_slices=kept, peer_changes=changes)
        size += len(encode(msg, id="g1.0", sender="controller"))
        entries += sum(len(c.peers) + len(c.gone) for c in changes)
    return time.perf_counter() - started, entries, size


def measure(n: int, repeat: int) -> dict[str, Any]:
    whole, change, before = [], [], []
    for k in range(repeat):
        cluster, nodes = cluster_of(n)
        seconds, whole_entries, whole_bytes = push_all(cluster, nodes)
        whole.append(seconds)
        cluster.slivers["big-7"].address = f"10.255.{k}.9"
        peers.address_changed(cluster, "big")
        seconds, change_entries, change_bytes = push_all(cluster, nodes)
        change.append(seconds)
        for rec in nodes:  # as before protocol 2.6: nothing known to be held, the whole set again
            rec.peers_sent.clear()
        before.append(push_all(cluster, nodes)[0])
    return {
        "slivers": n,
        "whole_s": whole,
        "whole_entries": whole_entries,
        "whole_mb": whole_bytes / 1e6,
        "change_s": change,
        "change_entries": change_entries,
        "change_mb": change_bytes / 1e6,
        "before_s": before,
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
            (f"{n} slivers: that change before 2.6 (the whole set again)", _spread(r["before_s"], unit=" s")),
        ]
    largest = rows[-1]
    goals = [Goal(f"one changed address, {largest['slivers']}-node slice (worst run)", max(largest["change_s"]) * 1000, CHANGE_GOAL_MS, at_least=False, unit=" ms")]
    report(args, "telling a slice's addresses (controller/peers.py)", "before protocol 2.6 every change re-sent the whole set: N^2 entries per change", measured, goals)
    return {"sizes": rows, "machine": machine_json(), "goals": {g.label: g.met for g in goals}}
