"""The wide-area path between simulated machines: what the user-space delay daemon carries and
how exact its delays are.

All inside a private network namespace playing the host (benchmarks/wanbed.py): two simulated
machines, Princeton and Tokyo, one sliver each, the daemon in between.

* capacity, with the model's delay set to zero: UDP datagrams of 64 and 1,400 bytes sent as
  fast as one Python sender can (packets/s and Mbit/s delivered to the receiving sliver's
  veth), and one TCP stream (Mbit/s; segmentation offload lets the daemon move 64 KiB per
  packet), next to the same TCP stream routed by the kernel alone;
* delay, with the default model: ping round trips Princeton -> Tokyo against the model's
  figure (error p50/p99/max), and the daemon's own release lateness. ping runs SCHED_FIFO
  (as the daemon does), so that on a busy host its own wake-ups are not counted as delay.

Needs root, /dev/net/tun, iproute2, util-linux (chrt) and busybox (ping). The sender, the daemon and the kernel
share the machine's cores, so the capacity is a floor for a machine of this kind.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from benchmarks.common import Goal, machine_json, out, percentile, report, table
from benchmarks.wanbed import WanBed
from node_agent.wan.emulator import Wan
from node_agent.wan.model import WanSettings, rtt_ms
from node_agent.wan.probe import detect
from slices.catalogue import builtin_catalogue
from slices.errors import SliceMeshError

ANCHOR = "Mahimahi DelayShell (C++, one TUN pair per shell); netem in the kernel; the model's Princeton-Tokyo RTT"
ROOT = Path(__file__).resolve().parent.parent
ZERO = WanSettings(us_per_km=0.0, access_ms=0.0, lan_ms=0.0)  # capacity: no delay at all


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seconds", type=float, default=5.0, help="length of each throughput window (default 5)")
    p.add_argument("--pings", type=int, default=200, help="round trips measured for the delay error (default 200)")


def _py(bed: WanBed, node: int, *args: str) -> list[str]:
    return bed.argv(node, 0, [sys.executable, "-m", "benchmarks.wantraffic", *args])


def _start_receiver(bed: WanBed, node: int, *args: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(_py(bed, node, *args), stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        proc.kill()
        raise SliceMeshError(f"traffic receiver {args[0]} did not start")
    return proc


def _cpu_seconds(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return float(t.user + t.system)


def udp_window(bed: WanBed, daemon: int, size: int, seconds: float) -> dict[str, float]:
    """Offered and delivered datagrams/s over ``seconds`` from node 0 to node 1, and the
    daemon's CPU share meanwhile (the cores are shared with the sender and the kernel)."""
    hold = _start_receiver(bed, 1, "udp-hold", "9000", str(seconds + 10))
    try:
        veth = bed.host_veth(1)
        p0, b0 = bed.host_counters(veth)
        c0 = _cpu_seconds(daemon)
        t0 = time.monotonic()
        sent = int(subprocess.run(_py(bed, 0, "udp-send", bed.address(1), "9000", str(size), str(seconds)), capture_output=True, text=True, cwd=ROOT, check=True).stdout)
        elapsed = time.monotonic() - t0
        time.sleep(0.05)  # the last packets of the window are still in flight
        p1, b1 = bed.host_counters(veth)
        cpu = (_cpu_seconds(daemon) - c0) / (time.monotonic() - t0)
    finally:
        hold.kill()
        hold.wait()
    delivered = p1 - p0
    ip_bytes = (b1 - b0) - 14 * delivered  # the veth counts Ethernet headers
    pps = delivered / elapsed
    return {"offered_pps": sent / elapsed, "pps": pps, "mbit": ip_bytes * 8 / elapsed / 1e6, "delivered": delivered, "sent": sent, "daemon_cpu": cpu, "pps_per_core": pps / cpu if cpu else 0.0}


def tcp_window(bed: WanBed, seconds: float) -> float:
    sink = _start_receiver(bed, 1, "tcp-sink", "9001")
    try:
        subprocess.run(_py(bed, 0, "tcp-send", bed.address(1), "9001", str(seconds)), capture_output=True, cwd=ROOT, check=True, timeout=seconds + 30)
        assert sink.stdout is not None
        n, secs = sink.stdout.readline().split()
    finally:
        sink.kill()
        sink.wait()
    return int(n) * 8 / float(secs) / 1e6 if float(secs) else 0.0


def _set_host_forwarding(bed: WanBed, on: bool) -> None:
    for n in bed.nodes:
        subprocess.run(["ip", "netns", "exec", bed.host, "sysctl", "-qw", f"net.ipv4.conf.{n.bridge}.forwarding={int(on)}"], check=True)


def measure(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    sites = {s.name: s for s in builtin_catalogue()}
    with WanBed([("princeton-1", sites["princeton"]), ("tokyo-1", sites["tokyo"])]) as bed:
        _set_host_forwarding(bed, True)
        direct_tcp = tcp_window(bed, min(args.seconds, 2.0))
        _set_host_forwarding(bed, False)
        wan = Wan(ZERO, prefix=bed.token, state_dir=work / "capacity", netns=bed.host_path)
        wan.decide()
        wan.start(bed.nodes)
        try:
            assert wan.proc is not None
            small = udp_window(bed, wan.proc.pid, 64, args.seconds)
            large = udp_window(bed, wan.proc.pid, 1400, args.seconds)
            tcp = tcp_window(bed, args.seconds)
            cap_stats = wan.fresh_stats()
        finally:
            wan.stop()
        wan = Wan(WanSettings(), prefix=bed.token, state_dir=work / "delay", netns=bed.host_path)
        wan.decide()
        wan.start(bed.nodes)
        try:
            model = rtt_ms(wan.settings, bed.nodes[0], bed.nodes[1])
            bed.ping(0, bed.address(1), count=2, interval=0.2)  # ARP on both bridges first
            rtts = bed.ping(0, bed.address(1), count=args.pings, interval=0.05, timeout=args.pings * 0.05 + 30, realtime=True)
            delay_stats = wan.fresh_stats()
        finally:
            wan.stop()
        leftovers = bed.links()
    errors = [r - model for r in rtts] or [float("nan")]
    return {
        "direct_tcp_mbit": direct_tcp,
        "udp64": small,
        "udp1400": large,
        "tcp_mbit": tcp,
        "capacity_stats": cap_stats,
        "model_rtt_ms": model,
        "rtts": rtts,
        "errors": errors,
        "delay_stats": delay_stats,
        "links_left": [name for name in leftovers if name.endswith("-wan")],
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.quick:
        args.seconds = min(args.seconds, 1.5)
        args.pings = min(args.pings, 20)
    paths = detect()
    if not paths.tun:
        raise SliceMeshError(f"the WAN benchmark needs the TUN path: {paths.tun_reason}")
    with tempfile.TemporaryDirectory(prefix="slicemesh-wanbench-") as tmp:
        m = measure(args, Path(tmp))
    errs = m["errors"]
    p50, p99, worst = percentile(errs, 50), percentile(errs, 99), max(errs)
    ds = m["delay_stats"]
    goals = [
        Goal("RTT error p50 vs model", p50, 1.0, False, " ms"),
        Goal("RTT error p99 vs model (issue 11: within 15%)", p99, 0.15 * m["model_rtt_ms"], False, " ms"),
        Goal("64-byte datagrams through the daemon", m["udp64"]["pps"], 20_000, True, " pps"),
    ]
    measured = [
        ("path", f"tun (netem: {'yes' if paths.netem else 'no: ' + paths.netem_reason}); offload {m['capacity_stats']['offload']}, {m['capacity_stats']['priority']}"),
        *[(f"UDP {k[3:]} B", f"{m[k]['pps']:,.0f} pps delivered of {m[k]['offered_pps']:,.0f} offered ({m[k]['mbit']:,.1f} Mbit/s), daemon at {m[k]['daemon_cpu']:.0%} of a core: {m[k]['pps_per_core']:,.0f} pps per daemon core") for k in ("udp64", "udp1400")],
        ("TCP, one stream", f"{m['tcp_mbit']:,.0f} Mbit/s through the daemon; {m['direct_tcp_mbit']:,.0f} Mbit/s routed by the kernel alone"),
        ("Princeton-Tokyo RTT", f"model {m['model_rtt_ms']:.2f} ms; measured p50 {m['model_rtt_ms'] + p50:.2f} ms over {len(m['rtts'])} pings"),
        ("RTT error", f"p50 {p50:+.3f} ms, p99 {p99:+.3f} ms, max {worst:+.3f} ms"),
        ("daemon release lateness", f"mean {ds['lateness_ms_mean']:.3f} ms, p99 <= {ds['lateness_ms_p99']:g} ms, max {ds['lateness_ms_max']:.3f} ms"),
    ]
    rows = [[k, str(m[k]["sent"]), str(m[k]["delivered"]), f"{m[k]['pps']:,.0f}", f"{m[k]['mbit']:,.1f}", f"{m[k]['daemon_cpu']:.0%}", f"{m[k]['pps_per_core']:,.0f}"] for k in ("udp64", "udp1400")]
    head = ["load", "sent", "delivered", "pps", "Mbit/s", "daemon CPU", "pps/daemon core"]
    report(args, "wan: the user-space delay path", ANCHOR, measured, goals, table(rows, head))
    if not args.json:
        print(file=out(args))
    return {
        "benchmark": "wan",
        "path": "tun",
        "netem_available": paths.netem,
        "offload": m["capacity_stats"]["offload"],
        "priority": m["capacity_stats"]["priority"],
        "udp64_pps": round(m["udp64"]["pps"]),
        "udp64_offered_pps": round(m["udp64"]["offered_pps"]),
        "udp64_pps_per_daemon_core": round(m["udp64"]["pps_per_core"]),
        "udp1400_pps_per_daemon_core": round(m["udp1400"]["pps_per_core"]),
        "udp1400_pps": round(m["udp1400"]["pps"]),
        "udp1400_mbit": round(m["udp1400"]["mbit"], 1),
        "tcp_mbit": round(m["tcp_mbit"], 1),
        "direct_tcp_mbit": round(m["direct_tcp_mbit"], 1),
        "model_rtt_ms": round(m["model_rtt_ms"], 3),
        "rtt_p50_ms": round(m["model_rtt_ms"] + p50, 3),
        "rtt_error_p50_ms": round(p50, 3),
        "rtt_error_p99_ms": round(p99, 3),
        "rtt_error_max_ms": round(worst, 3),
        "pings": len(m["rtts"]),
        "lateness_ms_mean": round(ds["lateness_ms_mean"], 4),
        "lateness_ms_max": round(ds["lateness_ms_max"], 3),
        "daemon_drops": {k: m["capacity_stats"][k] for k in ("dropped_queue", "dropped_unknown", "write_errors")},
        "tun_left": m["links_left"],
        "goals_met": all(g.met for g in goals),
        "machine": machine_json(),
    }
