"""Container sliver start-up against bare runc, and what the runc backend costs in memory.

Measured in one run, interleaved so both see the same machine load:

* create-to-running of a ``busybox`` sliver through ``RuncBackend.create`` on a warm node
  (a warm slot: disk copied and mounted, netns + veth, supervisor; then the address, shaping,
  overlay, config and ``runc run -d``);
* ``runc run -d`` of an equivalent minimal bundle (same rootfs, same limits, fresh netns,
  but neither the sliver's seccomp filter nor a user namespace: what ``runc spec`` gives),
  the floor any runc-based backend stands on. Goal: p50 <= 1.2x bare runc, the sliver's
  confinement included.

The node's warmer refills what a create took right after it; each bare run waits until it is
done (``Warmer.wait_idle``), so neither side's timing includes the other's work. A burst of
10 creates back to back, where all but the first few start cold, is reported beside it.

Also: RSS of a process that holds a RuncBackend and does nothing (what the backend adds to an
idle agent), and host memory per running idle sliver (MemAvailable delta over 10 slivers).
Needs root, runc, busybox-static, e2fsprogs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import Goal, machine_json, report
from node_agent.backends.runc import oci, rootfs
from node_agent.backends.runc.backend import RuncBackend
from node_agent.machine_resources import MachineResources
from slices.model import Resources, SliverSpec

MiB = 1 << 20


BURST = 10  # creates back to back, most of them cold


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-n", type=int, default=50, help="create/destroy cycles per variant")


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def _mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def _rss_of_idle_backend(state: Path, images_dir: Path, prefix: str) -> float:
    """Its own node and state: a second backend over the bench's would sweep its warm slots."""
    code = (
        "import sys, time; from pathlib import Path; from node_agent.backends.runc.backend import RuncBackend\n"
        "from node_agent.machine_resources import MachineResources\n"
        f"m = MachineResources(Path({str(state)!r}) / 'node', 'idle', prefix={prefix!r}, images_dir=Path({str(images_dir)!r}))\n"
        f"b = RuncBackend(m, Path({str(state)!r}) / 'runc')\n"
        "b.list(); m.warmer.wait_idle(60); print(open('/proc/self/status').read().split('VmRSS:')[1].split()[0], flush=True)\n"
        "b.close(); m.forget()\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=Path(__file__).parent.parent)
    return int(out.stdout.strip()) / 1024


def _bare_bundle(root: Path, lower: Path, prefix: str) -> Path:
    bundle = root / "bare"
    bundle.mkdir()
    cfg = oci.ContainerConfig(
        hostname="bare", args=("sleep", "3600"), cgroups_path=f"/{prefix}/bare/x", netns_path=None,
        cpu=0.5, memory=64 * MiB, pids_limit=512, rootfs=str(lower),
    )  # fmt: skip
    config = oci.make_config(cfg, 1)
    config["root"]["readonly"] = True
    del config["linux"]["seccomp"]  # runc's own defaults: the filter's cost counts against the sliver
    (bundle / "config.json").write_text(json.dumps(config))
    return bundle


QUICK_N = 5  # cycles per variant with --quick


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The figures; the table goes to stdout, or to stderr with ``--json`` (the CLI prints
    the JSON, one line)."""
    n = QUICK_N if getattr(args, "quick", False) else int(getattr(args, "n", 50))
    result = measure(n)
    rows = [
        ("sliver create-to-running p50 / p95", f"{result['p50_ms']} / {result['p95_ms']} ms"),
        ("bare `runc run -d` p50 / p95", f"{result['bare_runc_p50_ms']} / {result['bare_runc_p95_ms']} ms"),
        ("ratio p50 (goal <= 1.2)", f"{result['ratio_p50']}"),
        ("sliver destroy p50", f"{result['destroy_p50_ms']} ms"),
        (f"burst of {BURST} creates back to back p50 / max", f"{result['burst_p50_ms']} / {result['burst_max_ms']} ms"),
        ("RSS of a process holding an idle RuncBackend", f"{result['idle_backend_rss_mib']} MiB"),
        ("host memory per idle busybox sliver", f"{result['per_sliver_host_mib']} MiB"),
    ]
    goals = [Goal("sliver start p50 against bare runc", result["ratio_p50"], 1.2, at_least=False, unit="x")]
    report(args, f"container sliver start-up against bare runc (n={n} each, interleaved)", "bare `runc run -d` of the same rootfs and limits", rows, goals)
    return {**result, "machine": machine_json(), "goals_met": all(g.met for g in goals)}


def measure(n: int) -> dict[str, Any]:
    prefix = f"smbench{os.getpid() % 1000}"
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    images_dir = tmp / "images"
    lower = rootfs.prepare("busybox", images_dir).lower
    bare = _bare_bundle(tmp, lower, prefix)
    bare_root = tmp / "bare-runc"
    machine = MachineResources(tmp / "state" / "node", "bench", prefix=prefix, capacity_cpu=2.0, capacity_memory=8 << 30, images_dir=images_dir)
    backend = RuncBackend(machine, tmp / "state" / "runc")
    ours: list[float] = []
    destroys: list[float] = []
    theirs: list[float] = []
    try:

        def spec(i: int) -> SliverSpec:
            return SliverSpec(id=f"b{i}", slice="bench", isolation="container", image="busybox", resources=Resources(cpu=0.5, memory=64 * MiB, bandwidth=100_000_000))

        for i in range(-3, n):  # three warm-up rounds
            t0 = time.perf_counter()
            backend.create(spec(i))
            t1 = time.perf_counter()
            backend.destroy(f"b{i}")
            t2 = time.perf_counter()
            machine.warmer.wait_idle(60)  # the refill of what this create took: out of the bare timing
            cid = f"bare{i}"
            t3 = time.perf_counter()
            subprocess.run(["runc", "--root", str(bare_root), "run", "-d", "-b", str(bare), cid], check=True,
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
            t4 = time.perf_counter()
            subprocess.run(["runc", "--root", str(bare_root), "delete", "--force", cid], check=True, capture_output=True)
            if i >= 0:
                ours.append((t1 - t0) * 1e3)
                destroys.append((t2 - t1) * 1e3)
                theirs.append((t4 - t3) * 1e3)
        idle_rss = _rss_of_idle_backend(tmp / "idle", images_dir, prefix)
        k = BURST
        machine.warmer.wait_idle(60)
        avail0 = _mem_available()
        burst = []
        for i in range(k):
            t0 = time.perf_counter()
            backend.create(spec(1000 + i))
            burst.append((time.perf_counter() - t0) * 1e3)
        machine.warmer.wait_idle(60)  # the refilled slots, as on any node, are counted too
        per_sliver = (avail0 - _mem_available()) / k / MiB
        for i in range(k):
            backend.destroy(f"b{1000 + i}")
    finally:
        for st in backend.list():
            backend.destroy(st.id)
        backend.close()
        machine.forget()
        machine.cg.remove(prefix)
        shutil.rmtree(tmp, ignore_errors=True)
    result = {
        "n": n,
        "p50_ms": round(statistics.median(ours), 1),
        "p95_ms": round(_pct(ours, 0.95), 1),
        "bare_runc_p50_ms": round(statistics.median(theirs), 1),
        "bare_runc_p95_ms": round(_pct(theirs, 0.95), 1),
        "ratio_p50": round(statistics.median(ours) / statistics.median(theirs), 2),
        "destroy_p50_ms": round(statistics.median(destroys), 1),
        "burst_p50_ms": round(statistics.median(burst), 1),
        "burst_max_ms": round(max(burst), 1),
        "idle_backend_rss_mib": round(idle_rss, 1),
        "per_sliver_host_mib": round(per_sliver, 1),
    }
    return result


if __name__ == "__main__":
    run(argparse.Namespace(n=int(sys.argv[1]) if len(sys.argv) > 1 else 50, json="--json" in sys.argv, quick=False))
