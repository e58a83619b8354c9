"""Moving running slivers between two nodes on this host: VM live migration and container cold moves.

Two nodes' worth of real resources (bridge, subnet, cgroups, address pool each), a QEMU and a
runc backend on each, driven as the agents drive them (slices/migration.py): the target
prepares, the source sends, the target runs. Each sliver moves back and forth ``--runs``
times.

* VM, live: a guest of each size in ``--guest-mib``, idle, and dirtying memory at a fixed
  pace (``--dirty-mib`` MiB of random bytes rewritten on a tmpfs, 1 MiB per ``dd``, then a
  250 ms pause: as fast as the emulated guest manages, at most 4 rounds a second). From QEMU (``query-migrate``):
  total time, downtime, RAM and disk bytes, dirty-page rate, passes.
* Container, cold: a container with ``--fill-mib`` MiB of files on its disk, whose command
  appends ``/proc/uptime`` to a file on that disk every 10 ms; downtime is the largest gap in
  that file across the move (the host's clock, as both nodes share it here), total time and
  bytes from the source's report.

Anchors: Clark et al. (NSDI 2005) measured 60-210 ms of downtime for Xen pre-copy; QEMU's
default ``downtime-limit`` is 300 ms. Goal: an idle guest's downtime within that limit in every
run, under TCG here.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import Goal, machine_json, median, report, table
from node_agent import images
from node_agent.backends.base import collected
from node_agent.backends.qemu.backend import QemuBackend
from node_agent.backends.qemu.settings import QemuSettings
from node_agent.backends.runc.backend import RuncBackend
from node_agent.backends.runc.settings import RuncSettings
from node_agent.machine_resources import MachineResources
from slices.migration import Migration, MigrationReport, MoveOptions
from slices.model import Resources, SliverSpec
from slices.waiting import wait_until

MiB = 1 << 20
BOOT_S = 300.0
TOKEN = "5" * 32
DIRTY = (  # random bytes (zero pages would travel as markers, not as the pages they are)
    "mkdir -p /dev/shm && mount -t tmpfs -o size={m}m tmpfs /dev/shm && head -c 1048576 /dev/urandom > /dev/shm/r || exit 1; "
    "while :; do i=0; while [ $i -lt {n} ]; do dd if=/dev/shm/r of=/dev/shm/d bs=1M seek=$i count=1 conv=notrunc 2>/dev/null; i=$((i+1)); done; sleep 0.25; done"
)
IDLE = "trap 'exit 0' TERM; while :; do sleep 3600 & wait $!; done"
HEARTBEAT = "trap 'exit 0' TERM; while :; do cat /proc/uptime >> /var/hb; usleep 10000; done"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runs", type=int, default=3, help="moves of each sliver (back and forth; default 3)")
    p.add_argument("--guest-mib", type=int, nargs="+", default=[128, 256], help="VM guest sizes (default 128 256)")
    p.add_argument("--dirty-mib", type=int, default=32, help="MiB the dirtying guest rewrites every 250 ms (default 32)")
    p.add_argument("--fill-mib", type=int, nargs="+", default=[16, 256], help="MiB of files on the moving container's disk (default 16 256)")
    p.add_argument("--images-dir", default=str(images.DEFAULT_DIR), help="where the kernel and images are (make setup)")


@dataclasses.dataclass
class Node:
    machine: MachineResources
    vm: QemuBackend
    ctr: RuncBackend


def make_node(tmp: Path, name: str, prefix: str, images_dir: Path) -> Node:
    m = MachineResources(tmp / name, name, prefix=prefix, capacity_cpu=2.0, capacity_memory=4 << 30, images_dir=images_dir)
    return Node(m, QemuBackend(m, tmp / name / "qemu", QemuSettings(accelerator="tcg")), RuncBackend(m, tmp / name / "runc", RuncSettings(warm_slots=0)))


def move(src: Any, dst: Any, spec: SliverSpec, kind: str, names: tuple[str, str]) -> MigrationReport:
    """One move of ``spec`` from backend ``src`` to ``dst``, as the two agents do it."""
    listening = dst.create(dataclasses.replace(spec, migration=Migration(role="in", kind=kind, token=TOKEN, peer=names[0])))
    assert listening.migration is not None, listening
    port, disk = listening.migration.port, listening.migration.disk_port
    out_spec = dataclasses.replace(
        spec, migration=Migration(role="out", kind=kind, token=TOKEN, peer=names[1], endpoint=f"127.0.0.1:{port}", disk_endpoint=f"127.0.0.1:{disk}" if disk else None, options=MoveOptions())
    )
    rep: MigrationReport = src.send(out_spec)
    wait_until(lambda: dst.status(spec.id).state == "running", BOOT_S, f"{spec.id} to run on {names[1]}", max_delay=0.1)
    src.destroy(spec.id)
    return rep


def ping_pong(a: Any, b: Any, spec: SliverSpec, kind: str, runs: int) -> list[MigrationReport]:
    reports, src, dst, names = [], a, b, ("n1", "n2")
    for _ in range(runs):
        reports.append(move(src, dst, spec, kind, names))
        src, dst, names = dst, src, (names[1], names[0])
    return reports


def run_in(backend: Any, sid: str, script: str, timeout: float = 120.0) -> str:
    code, out_, err = collected(backend.exec(sid, ["/bin/sh", "-c", script], timeout))
    if code != 0:
        raise RuntimeError(f"{script!r} exited {code}: {err.decode(errors='replace')[-300:]}")
    return out_.decode(errors="replace")


def vm_case(n1: Node, n2: Node, guest_mib: int, dirty_mib: int | None, runs: int, tag: str) -> dict[str, Any]:
    command = DIRTY.format(n=dirty_mib, m=dirty_mib + 8) if dirty_mib else IDLE
    spec = SliverSpec(id=f"{tag}-vm{guest_mib}{'d' if dirty_mib else 'i'}", slice="bench", isolation="vm", image="busybox", resources=Resources(cpu=1.0, memory=guest_mib * MiB, disk=64 * MiB), command=("/bin/sh", "-c", command))
    n1.vm.create(spec)
    try:
        wait_until(lambda: n1.vm.status(spec.id).state == "running", BOOT_S, f"{spec.id} to boot", max_delay=0.2)
        time.sleep(2.0)  # the dirtying loop reaches its pace
        reports = ping_pong(n1.vm, n2.vm, spec, "live", runs)
    finally:
        for n in (n1, n2):
            n.vm.destroy(spec.id)
    return summarize(reports, {"guest_mib": guest_mib, "dirty_mib_per_250ms": dirty_mib or 0})


def heartbeat_gap(text: str) -> float:
    """The largest gap (seconds) between consecutive heartbeats in ``/var/hb``."""
    ts = [float(line.split()[0]) for line in text.splitlines() if line.strip()]
    return max((b - a for a, b in itertools.pairwise(ts)), default=0.0)


def container_case(n1: Node, n2: Node, fill_mib: int, runs: int, tag: str) -> dict[str, Any]:
    spec = SliverSpec(id=f"{tag}-ctr{fill_mib}", slice="bench", isolation="container", image="busybox", resources=Resources(cpu=0.5, memory=64 * MiB, disk=(fill_mib + 128) * MiB), command=("/bin/sh", "-c", HEARTBEAT))
    n1.ctr.create(spec)
    backends = (n1.ctr, n2.ctr)
    try:
        run_in(n1.ctr, spec.id, f"dd if=/dev/urandom of=/var/fill bs=1M count={fill_mib} 2>/dev/null; sync")
        reports, gaps = [], []
        for i in range(runs):
            src, dst = backends[i % 2], backends[(i + 1) % 2]
            before = len(run_in(src, spec.id, "cat /var/hb").splitlines())
            reports.append(move(src, dst, spec, "cold", ("n1", "n2") if i % 2 == 0 else ("n2", "n1")))
            beats = lambda d=dst, n=before: len(run_in(d, spec.id, "cat /var/hb").splitlines()) > n + 5  # noqa: E731
            wait_until(beats, 30, "heartbeats on the new node")
            lines = run_in(dst, spec.id, "cat /var/hb").splitlines()
            gaps.append(heartbeat_gap("\n".join(lines[max(0, before - 5) :])))
    finally:
        for b in backends:
            b.destroy(spec.id)
    out_ = summarize(reports, {"fill_mib": fill_mib})
    out_["downtime_ms"] = spread([g * 1000 for g in gaps])  # the workload's own measure
    return out_


def spread(values: list[float]) -> dict[str, float]:
    return {"min": round(min(values), 1), "median": round(median(values), 1), "max": round(max(values), 1)}


def summarize(reports: list[MigrationReport], extra: dict[str, Any]) -> dict[str, Any]:
    return {
        **extra,
        "runs": len(reports),
        "total_ms": spread([r.total_ms for r in reports]),
        "downtime_ms": spread([r.downtime_ms for r in reports]),
        "bytes_mib": spread([r.bytes / MiB for r in reports]),
        "ram_mib": spread([r.ram_bytes / MiB for r in reports]),
        "disk_mib": spread([r.disk_bytes / MiB for r in reports]),
        "passes": spread([float(r.passes) for r in reports]),
        "dirty_pages_per_s": spread([r.dirty_rate for r in reports]),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    if getattr(args, "quick", False):
        args.runs, args.guest_mib, args.fill_mib, args.dirty_mib = 1, [min(args.guest_mib)], [8], 0
    prefix = f"smmig{os.getpid() % 1000}"
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    images_dir = Path(args.images_dir)
    t0 = time.monotonic()
    n1, n2 = make_node(tmp, "n1", prefix, images_dir), make_node(tmp, "n2", prefix, images_dir)
    vms: list[dict[str, Any]] = []
    containers: list[dict[str, Any]] = []
    try:
        for mib in args.guest_mib:
            vms.append(vm_case(n1, n2, mib, None, args.runs, prefix))
            if args.dirty_mib:
                vms.append(vm_case(n1, n2, mib, args.dirty_mib, args.runs, prefix))
        containers = [container_case(n1, n2, fill, args.runs, prefix) for fill in args.fill_mib]
    finally:
        for n in (n1, n2):
            n.vm.close()
            n.ctr.close()
            n.machine.forget()
        shutil.rmtree(tmp, ignore_errors=True)
    idle_worst = max((v["downtime_ms"]["max"] for v in vms if not v["dirty_mib_per_250ms"]), default=0.0)
    goals = [Goal("idle VM downtime, worst run (QEMU downtime-limit)", idle_worst, 300.0, False, " ms")]
    result = {"benchmark": "migration", "vm_live": vms, "container_cold": containers, "goals_met": all(g.met for g in goals), "seconds": round(time.monotonic() - t0, 1), "machine": machine_json()}
    show(result, goals, args)
    return result


def _mmm(d: dict[str, float], fmt: str = "{:.0f}") -> str:
    return " / ".join(fmt.format(d[k]) for k in ("min", "median", "max"))


def show(r: dict[str, Any], goals: list[Goal], args: argparse.Namespace) -> None:
    vm_rows = [
        [f"{v['guest_mib']} MiB", f"{v['dirty_mib_per_250ms']} MiB/250ms" if v["dirty_mib_per_250ms"] else "idle", _mmm(v["total_ms"]), _mmm(v["downtime_ms"]), _mmm(v["ram_mib"], "{:.1f}"), _mmm(v["disk_mib"], "{:.1f}"), _mmm(v["passes"]), _mmm(v["dirty_pages_per_s"])]
        for v in r["vm_live"]
    ]
    ctr_rows = [[f"{c['fill_mib']} MiB", _mmm(c["total_ms"]), _mmm(c["downtime_ms"]), _mmm(c["disk_mib"], "{:.1f}")] for c in r["container_cold"]]
    extra = (
        f"VM live migration ({r['vm_live'][0]['runs'] if r['vm_live'] else 0} moves each; min / median / max)\n"
        + table(vm_rows, ["guest", "workload", "total ms", "downtime ms", "RAM MiB", "disk MiB", "passes", "dirty pages/s"])
        + "\n\ncontainer cold moves (downtime: largest gap in a 10 ms heartbeat the workload writes)\n"
        + table(ctr_rows, ["files", "total ms", "downtime ms", "disk MiB sent"])
    )
    report(args, "slicemesh bench migration", "Clark et al. NSDI'05: 60-210 ms Xen pre-copy downtime; QEMU downtime-limit 300 ms", [("took", f"{r['seconds']} s")], goals, extra)
