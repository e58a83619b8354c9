"""Bare process, container sliver, VM sliver: the same work three ways on one node, in one run.

For each of the three (benchmarks/isolation_kinds.py):

* start-up: exec (bare), ``RuncBackend.create`` or ``QemuBackend.create`` until the command
  runs (a VM: until its guest reports it), p50 and p95 over ``--starts`` starts; beside the VM,
  ``qemu-system-x86_64`` run bare with the same kernel, initramfs and command line to the same
  point, interleaved with the VM starts (goal: VM p50 <= 1.2x bare QEMU);
* host memory of an idle guest (``sleep``): RSS of its processes and its cgroup's count;
* CPU: a fixed ``busybox awk`` loop, throughput relative to bare (goal: container >= 0.97x);
* disk: ``busybox dd ... conv=fsync`` to the sliver's own disk (bare: the host's file system);
* network: ``busybox nc`` to a sink on the node bridge's address, sliver -> host over its NIC
  (bare: the same from the host itself, i.e. over loopback);
* density: idle guests started one by one on the node, capped at 2 GiB, until one fails or
  ``--density-bound`` run (containers of 64 MiB; VMs of the smallest RAM the kernel boots in);
* the VM accelerator (KVM where a probe guest boots with it, else TCG).

Needs root, runc, QEMU and ``make setup`` (the guest kernel). Under TCG a guest's CPU work is
emulated: expect the VM column's CPU figure far below 1 and its start-up in seconds.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import Goal, machine_json, median, out, percentile, report, table
from benchmarks.isolation_kinds import Bare, BareQemu, Kind, Sink, Sliver, density, node
from node_agent import images
from node_agent.backends.qemu.backend import QemuBackend
from node_agent.backends.qemu.settings import QemuSettings
from node_agent.backends.runc.backend import RuncBackend
from node_agent.backends.runc.settings import RuncSettings
from node_agent.firewall import DEFAULT_ACCESS
from slices.model import Resources

ANCHOR = (
    "Soltesz et al., EuroSys 2007 (Linux-VServer vs Xen, the PlanetLab choice): containers gave isolation "
    "comparable to a hypervisor's with superior efficiency (near-native CPU and I/O, more guests per machine)"
)
MiB = 1 << 20
BUDGET = 2 << 30  # the node's memory for the density figure
KINDS = ("bare", "container", "vm")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--starts", type=int, default=10, help="start-ups per kind (and bare QEMU boots), after a warm-up round; --quick: 1, no warm-up")
    p.add_argument("--cpu-loop", type=int, default=2_000_000, help="iterations of the awk loop; --quick: 200,000")
    p.add_argument("--disk-mib", type=int, default=128, help="MiB written with fsync; --quick: 16")
    p.add_argument("--net-mib", type=int, default=32, help="MiB sent to the host (a TCG guest sends ~10 Mbit/s); --quick: 8")
    p.add_argument("--reps", type=int, default=5, help="runs of each workload for bare and container, interleaved, median kept (a TCG guest: 1); --quick: 1")
    p.add_argument("--density-bound", type=int, default=64, help="at most this many idle guests per kind; --quick: 3 containers, 1 VM")
    p.add_argument("--images-dir", default=str(images.DEFAULT_DIR), help="where `make setup` put the busybox base and the guest kernel")


def timed(kind: Kind, work: str, timeout: float) -> float:
    """Seconds ``work`` (shell) took inside ``kind``, by the guest's own clock."""
    text = kind.run(f"read a _ < /proc/uptime; {work}; read b _ < /proc/uptime; echo $a $b", timeout)
    a, b = (float(x) for x in text.split()[-2:])
    return max(b - a, 0.01)


def workloads(kinds: dict[str, Kind], args: argparse.Namespace, gateway: str, sink: Sink, reps: int) -> dict[str, dict[str, float]]:
    """Each workload ``reps`` times per kind, interleaved (bare, container, vm, bare, ...) so
    that all see the same load; the median is kept. A TCG guest runs each once: its figures
    are orders of magnitude apart from the others', and each costs it tens of seconds."""
    loop, disk, net = args.cpu_loop, args.disk_mib, args.net_mib
    got: dict[str, dict[str, list[float]]] = {k: {"cpu_s": [], "disk_mib_s": [], "net_mbit_s": []} for k in kinds}
    for r in range(reps):
        for name, kind in kinds.items():
            if r and name == "vm":
                continue
            g = got[name]
            g["cpu_s"].append(timed(kind, f"busybox awk 'BEGIN {{ s = 0; for (i = 0; i < {loop}; i++) s += i % 7; print s }}' >/dev/null", 1800))
            wrote = timed(kind, f"busybox dd if=/dev/zero of={kind.disk_dir}/bench.dd bs=1M count={disk} conv=fsync 2>/dev/null; busybox rm {kind.disk_dir}/bench.dd", 1800)
            g["disk_mib_s"].append(disk / wrote)
            send = f"busybox dd if=/dev/zero bs=64k count={net * 16} 2>/dev/null | busybox nc {gateway} {sink.port}"
            g["net_mbit_s"].append(sink.receive(lambda k=kind, s=send: k.run(s, 1800), 1800) * 8 / 1e6)
    res = {name: {"cpu_s": round(median(g["cpu_s"]), 3), "disk_mib_s": round(median(g["disk_mib_s"]), 1), "net_mbit_s": round(median(g["net_mbit_s"]), 1)} for name, g in got.items()}
    for name in kinds:
        r_, b = res[name], res["bare"]
        r_.update(cpu_vs_bare=round(b["cpu_s"] / r_["cpu_s"], 3), disk_vs_bare=round(r_["disk_mib_s"] / b["disk_mib_s"], 3), net_vs_bare=round(r_["net_mbit_s"] / b["net_mbit_s"], 3))
    return res


def starts(kinds: dict[str, Kind], bare_qemu: BareQemu, n: int, warm_up: bool) -> tuple[dict[str, list[float]], list[float]]:
    """``n`` start-ups of each kind, interleaved (bare QEMU right after each VM) so all see the
    same load; with ``warm_up`` a first round is not counted (page cache, the warm slots)."""
    times: dict[str, list[float]] = {k: [] for k in kinds}
    qemu: list[float] = []
    first = 0 if warm_up else 1
    for i in range(first, n + 1):
        for name, kind in kinds.items():
            t = kind.start_once(i)
            if i:
                times[name].append(t)
        t = bare_qemu.boot_once()
        if i:
            qemu.append(t)
    return times, qemu


def run(args: argparse.Namespace) -> dict[str, Any]:
    quick = bool(getattr(args, "quick", False))
    if quick:
        args.starts, args.cpu_loop, args.disk_mib, args.net_mib = min(args.starts, 1), min(args.cpu_loop, 200_000), min(args.disk_mib, 16), min(args.net_mib, 8)
    images_dir = Path(args.images_dir)
    prefix = f"smiso{os.getpid() % 1000}"
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    sink = Sink()
    machine = node(tmp / "state", prefix, images_dir, BUDGET, [*DEFAULT_ACCESS, sink.access])
    runc = RuncBackend(machine, tmp / "state" / "runc", RuncSettings())
    qemu = QemuBackend(machine, tmp / "state" / "qemu", QemuSettings())
    work_res = Resources(cpu=1.0, memory=128 * MiB, disk=max(256, 2 * args.disk_mib) * MiB)
    container, vm = Sliver(runc, "container", work_res), Sliver(qemu, "vm", work_res)
    kinds: dict[str, Kind] = {"bare": Bare(images_dir / "busybox" / "bin" / "busybox", tmp / "bare"), "container": container, "vm": vm}
    t0 = time.monotonic()
    try:
        bare_qemu = BareQemu(qemu, tmp / "bare-qemu", work_res)
        start_times, qemu_times = starts(kinds, bare_qemu, args.starts, warm_up=not quick)
        settle = 2.0 if quick else 10.0
        memory = {name: kind.idle_memory(settle) for name, kind in kinds.items()}
        work = workloads(kinds, args, machine.net.gateway, sink, 1 if quick else args.reps)
        container.close()
        vm.close()
        bound = args.density_bound
        dense = {
            "container": density(container, 64 * MiB, 3 if quick else bound),
            "vm": density(vm, qemu.assets.min_memory, 1 if quick else min(bound, 16)),
        }
    finally:
        for k in kinds.values():
            k.close()
        runc.close()
        qemu.close()
        machine.forget()
        sink.close()
        shutil.rmtree(tmp, ignore_errors=True)
    result = assemble(start_times, qemu_times, memory, work, dense, qemu, args)
    result["seconds"] = round(time.monotonic() - t0, 1)
    show(result, args)
    return result


def assemble(
    start_times: dict[str, list[float]],
    qemu_times: list[float],
    memory: dict[str, tuple[int, int | None]],
    work: dict[str, dict[str, float]],
    dense: dict[str, tuple[int, bool, int]],
    qemu: QemuBackend,
    args: argparse.Namespace,
) -> dict[str, Any]:
    out_: dict[str, Any] = {"benchmark": "isolation", "starts": args.starts, "accelerator": f"{qemu.accel.name} ({qemu.accel.reason})", "machine": machine_json()}
    for name in KINDS:
        t = start_times[name]
        rss, cg = memory[name]
        out_[name] = {
            "start_p50_ms": round(median(t) * 1e3, 1),
            "start_p95_ms": round(percentile(t, 95) * 1e3, 1),
            "idle_rss_mib": round(rss / MiB, 1),
            "idle_cgroup_mib": round(cg / MiB, 1) if cg is not None else None,
            **work[name],
        }
        if name in dense:
            count, failed, used = dense[name]
            out_[name].update(density=count, density_hit_limit=failed, density_mib_each=round(used / max(count, 1) / MiB, 1))
    out_["vm"]["guest_mib"] = qemu.assets.min_memory // MiB
    out_["vm"]["accelerator"] = qemu.accel.name
    out_["bare_qemu_start_p50_ms"] = round(median(qemu_times) * 1e3, 1)
    out_["bare_qemu_start_p95_ms"] = round(percentile(qemu_times, 95) * 1e3, 1)
    out_["vm_start_vs_bare_qemu"] = round(out_["vm"]["start_p50_ms"] / out_["bare_qemu_start_p50_ms"], 3)
    goals = goals_of(out_)
    out_["goals_met"] = all(g.met for g in goals)
    return out_


def goals_of(r: dict[str, Any]) -> list[Goal]:
    return [
        Goal("VM start p50 / bare QEMU boot p50", r["vm_start_vs_bare_qemu"], 1.2, False, "x"),
        Goal("container CPU throughput / bare", r["container"]["cpu_vs_bare"], 0.97, True, "x"),
    ]


def show(r: dict[str, Any], args: argparse.Namespace) -> None:
    def cells(key: str, fmt: str = "{}") -> list[str]:
        return [fmt.format(r[k][key]) if r[k].get(key) is not None else "-" for k in KINDS]

    def density_cell(k: str) -> str:
        if "density" not in r[k]:
            return "-"
        hit = "then one failed" if r[k]["density_hit_limit"] else "bound reached"
        return f"{r[k]['density']} ({hit}; {r[k]['density_mib_each']} MiB each)"

    rows = [
        ["start to running p50 / p95 (ms)", *(f"{a} / {b}" for a, b in zip(cells("start_p50_ms"), cells("start_p95_ms"), strict=True))],
        ["idle guest: RSS / cgroup (MiB)", *(f"{a} / {b}" for a, b in zip(cells("idle_rss_mib"), cells("idle_cgroup_mib"), strict=True))],
        [f"CPU: awk loop of {args.cpu_loop:,} (s, median)", *cells("cpu_s")],
        ["  throughput vs bare", *cells("cpu_vs_bare", "{}x")],
        [f"disk: {args.disk_mib} MiB + fsync (MiB/s)", *cells("disk_mib_s")],
        ["  throughput vs bare", *cells("disk_vs_bare", "{}x")],
        [f"network to host: {args.net_mib} MiB (Mbit/s)", *cells("net_mbit_s")],
        ["  throughput vs bare", *cells("net_vs_bare", "{}x")],
        ["density in 2 GiB (idle guests)", *(density_cell(k) for k in KINDS)],
    ]
    detail = table(rows, ["", *KINDS])
    detail += (
        f"\n\nbare qemu-system-x86_64 boot to the same point p50 / p95: {r['bare_qemu_start_p50_ms']} / {r['bare_qemu_start_p95_ms']} ms"
        f"\ncontainers of 64 MiB; VMs of {r['vm']['guest_mib']} MiB, the smallest this kernel boots in (plus QEMU's overhead); workload slivers: 1 core, 128 MiB"
    )
    measured = [
        ("what", f"the same busybox workloads as a bare process, a runc container sliver and a QEMU VM sliver on one node; {r['starts']} starts each"),
        ("accelerator", r["accelerator"]),
    ]
    report(args, "isolation: bare process vs container vs VM", ANCHOR, measured, goals_of(r), detail)
    if not getattr(args, "json", False):
        print(file=out(args))
