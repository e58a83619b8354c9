"""The kernel path, for kernels that have netem: generated tc configuration, one batch per host.

Every packet from node A to node B is routed by the host out of B's bridge device, so the
delay A -> B is applied at the root of bridge B: an htb with one class per source node, a
netem qdisc under each class with that pair's delay, jitter and loss, and a u32 filter on the
source subnet choosing the class. The default class (host-originated traffic) gets no delay.
Traffic inside a node is switched between bridge ports and never passes the bridge device's
own qdisc, so it stays direct. Filters are a linear u32 list: fine for hundreds of nodes per
bridge; thousands would want u32 hash tables.

NOT EXERCISED on the project's machine kind: its kernel has no netem, so only the generator
(unit tests) and the htb/u32 part of its output (with pfifo standing in for netem, applied in
a test network namespace) are tested here. netem with jitter reorders packets within a pair;
the TUN path keeps their order.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

from node_agent.wan.model import WanNode, WanSettings, one_way_ms

RATE = "100gbit"  # htb classes only sort traffic; they must never shape it


class NetemError(Exception):
    pass


def _netem_args(s: WanSettings, delay_ms: float) -> str:
    args = f"netem delay {delay_ms:.3f}ms"
    if s.jitter_ms:
        args += f" {s.jitter_ms:.3f}ms distribution normal"
    if s.loss:
        args += f" loss random {s.loss * 100:.4f}%"
    return args + f" limit {s.queue_packets}"


def tc_lines(nodes: Sequence[WanNode], s: WanSettings) -> list[str]:
    """The ``tc -batch`` lines that make every bridge delay what it receives from other nodes."""
    if len(nodes) > 0xFFFE:
        raise NetemError(f"{len(nodes)} nodes: an htb holds at most 65534 classes per bridge")
    lines: list[str] = []
    for dst in nodes:
        dev = dst.bridge
        lines.append(f"qdisc add dev {dev} root handle 1: htb default 1")
        lines.append(f"class add dev {dev} parent 1: classid 1:1 htb rate {RATE} quantum 60000")
        minor = 1
        for src in nodes:
            if src.name == dst.name:
                continue
            minor += 1
            lines.append(f"class add dev {dev} parent 1: classid 1:{minor:x} htb rate {RATE} quantum 60000")
            lines.append(f"qdisc add dev {dev} parent 1:{minor:x} handle {minor:x}: {_netem_args(s, one_way_ms(s, src, dst))}")
            lines.append(f"filter add dev {dev} parent 1: protocol ip prio 1 u32 match ip src {src.subnet} flowid 1:{minor:x}")
    return lines


def apply(lines: Sequence[str], netns: str | None = None) -> None:
    """Run the batch with one ``tc`` process (set-up only, never on a packet's path)."""
    argv = ["tc", *(["-n", netns] if netns else []), "-batch", "-"]
    proc = subprocess.run(argv, input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise NetemError(f"tc -batch failed: {proc.stderr.strip()[-500:]}")


def remove(bridges: Sequence[str], netns: str | None = None) -> None:
    """Delete the root qdisc of every bridge that still exists (a missing one is fine)."""
    lines = [f"qdisc del dev {b} root" for b in bridges]
    argv = ["tc", "-force", *(["-n", netns] if netns else []), "-batch", "-"]
    subprocess.run(argv, input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=120)
