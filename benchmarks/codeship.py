"""Shipping a slice's code to its nodes: pull (receiver-initiated) versus push (sender-initiated).

A simulated cluster of ``--nodes`` machines (accounting-only slivers; the bundle transfer
itself is real: chunks over each agent's CURVE connection, verified, unpacked on each node).
Three slices of ``--nodes`` slivers, one per node, each with a ``--bundle-mib`` bundle of
random bytes: one pulled, one pushed (another bundle, so nothing is cached), then a second
slice with the first slice's code (every node has it: cache hits, nothing sent). For each:
time from the create to every sliver running, and the bytes of code that left the controller
(``ping``'s ``code_bytes_out``), and how many nodes got it from a peer agent instead
(``code_peer_sends``): a pulled bundle spreads from the first few nodes that hold it, the
controller sending a few copies (codeswarm.py). Goal: pull sends no more than one copy of a
bundle per node.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import BenchCluster, Goal, machine_json, report
from benchmarks.e2e import wait_running
from slices import bundle
from slices.client import Client
from slices.codeupload import upload
from slices.protocol import CreateSlice, Ping

MiB = 1 << 20


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--nodes", type=int, default=100, help="simulated nodes, one sliver each (default 100)")
    p.add_argument("--bundle-mib", type=int, default=20, help="bundle size in MiB (default 20)")


def make_bundle(tmp: Path, name: str, mib: int) -> bytes:
    d = tmp / name
    d.mkdir()
    (d / "payload").write_bytes(os.urandom(mib * MiB))
    (d / "run.sh").write_text("exec sleep 100000\n")
    return bundle.pack_dir(d)


def ship(c: Client, name: str, data: bytes, delivery: str, nodes: int) -> dict[str, Any]:
    digest, _ = upload(c, data)
    before = c.call(Ping())
    doc = {"name": name, "description": "code shipping", "resources": {"cpu": 0.01, "memory": "16Mi"}, "placement": {"count": nodes, "distinct": "none"}, "code": {"digest": digest, "size": len(data), "delivery": delivery}}
    t0 = time.perf_counter()
    c.call(CreateSlice(spec=doc, brief=True), timeout=60)
    took = wait_running(c, {name}, 600) - t0
    after = c.call(Ping())
    sent = after.code_bytes_out - before.code_bytes_out
    return {
        "delivery": delivery,
        "seconds": round(took, 2),
        "bytes_out_mib": round(sent / MiB, 1),
        "copies_per_node": round(sent / max(1, len(data) * nodes), 3),
        "from_peers": after.code_peer_sends - before.code_peer_sends,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    if getattr(args, "quick", False):
        args.nodes, args.bundle_mib = min(args.nodes, 4), min(args.bundle_mib, 2)
    tmp = Path(tempfile.mkdtemp(prefix="smcode"))
    try:  # the bundles' source directories go with the run (they were left in /tmp at every one)
        first, second = make_bundle(tmp, "a", args.bundle_mib), make_bundle(tmp, "b", args.bundle_mib)
        cluster = BenchCluster(nodes=args.nodes, agent_state=True)
        t0 = time.monotonic()
        with cluster:
            cluster.start()
            with cluster.client(timeout=60) as c:
                pull = ship(c, "pulled", first, "pull", args.nodes)
                push = ship(c, "pushed", second, "push", args.nodes)
                cached = ship(c, "cached", first, "pull", args.nodes)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result = {
        "benchmark": "codeship",
        "nodes": args.nodes,
        "bundle_mib": args.bundle_mib,
        "pull": pull,
        "push": push,
        "cached": cached,
        "seconds": round(time.monotonic() - t0, 1),
        "machine": machine_json(),
    }
    goals = [Goal("pull: copies of the bundle sent per node", pull["copies_per_node"], 1.0, False), Goal("cache hits: bytes sent", cached["bytes_out_mib"], 0.0, False, " MiB")]
    result["goals_met"] = all(g.met for g in goals)
    measured = [(f"{r['delivery']} ({k})", f"{r['seconds']} s to running, {r['bytes_out_mib']} MiB out of the controller ({r['copies_per_node']} copies per node), {r['from_peers']} nodes fed by peers") for k, r in (("first", pull), ("first", push), ("same code again", cached))]
    report(args, "slicemesh bench codeship", f"{args.nodes} slivers, one per node, a {args.bundle_mib} MiB bundle", measured, goals)
    return result
