"""The delay daemon: one process per simulation, reading packets from a TUN and writing each
back when its (source node, destination node) delay has passed (Mahimahi's DelayShell idea).

    python -m node_agent.wan.daemon --config wan.json [--netns /run/netns/X] [--ready-file F] [--stats-file F]

One daemon serves every node pair: a pair of its own per daemon would mean N^2 processes for
N machines, and the work per packet is the same either way. It owns what it adds: the TUN
(gone when its fd closes, taking its routes along) and the rules and forwarding switches
(``routing.TunRouting``), removed on SIGTERM/SIGINT; a daemon killed with SIGKILL leaves only
rules behind, which the next daemon of the same prefix (or ``Wan.stop``) sweeps.

The config is JSON: ``tun``, ``table``, ``nodes`` (``WanNode`` maps: the subnet -> node
table), ``settings`` (``WanSettings``), ``stats_period``. Counters go to the stats file as
JSON every ``stats_period`` seconds, on SIGUSR1 and at exit.
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import gc
import json
import logging
import os
import select
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from node_agent.wan.delayline import DelayLine
from node_agent.wan.model import WanNode, WanSettings, check_table, one_way_ms
from node_agent.wan.routing import RoutePlan, RoutingError, TunRouting
from node_agent.wan.tun import READ_SIZE, Tun, TunError, open_tun
from slices.daemon import setup_logging
from slices.errors import SpecError

log = logging.getLogger("slicemesh.wan")
CLONE_NEWNET = 0x40000000
RT_PRIORITY = 10  # low among real-time priorities: above every normal process, below the kernel's own
READS_PER_TURN = 256  # packets read at most before the next release check
MAX_READ_LATE = 0.0001  # stop reading once a queued packet is this overdue (s)
IDLE_WAIT = 1.0  # s of select with nothing queued (signals wake it earlier)


def enter_netns(path: str) -> None:
    """Move this (single-threaded) process into the network namespace at ``path``."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {path}: {os.strerror(ctypes.get_errno())}")
    finally:
        os.close(fd)


def load_config(path: Path) -> tuple[dict[str, Any], list[WanNode], WanSettings]:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SpecError(str(path), f"cannot read the WAN config: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("nodes"), list) or not isinstance(doc.get("tun"), str) or not isinstance(doc.get("table"), int):
        raise SpecError(str(path), "needs tun (string), table (integer), nodes (list) and settings (map)")
    nodes = [WanNode.from_map(n, f"nodes[{i}]") for i, n in enumerate(doc["nodes"])]
    check_table(nodes)
    settings = WanSettings.from_map(dict(doc.get("settings") or {}))
    return doc, nodes, settings


def make_line(nodes: list[WanNode], s: WanSettings, offset: int) -> DelayLine:
    return DelayLine(
        [n.subnet for n in nodes],
        lambda a, b: one_way_ms(s, nodes[a], nodes[b]) / 1000.0,
        jitter_s=s.jitter_ms / 1000.0,
        loss=s.loss,
        seed=s.seed,
        max_packets=s.queue_packets,
        max_bytes=s.queue_bytes,
        offset=offset,
    )


def raise_priority(realtime: bool) -> str:
    """Wake on time when the host is busy: a late wake-up is delay the model did not ask for.

    The daemon sleeps between packets, so a real-time policy costs others nothing until it is
    saturated; then it holds one core (less the kernel's 5% real-time throttle)."""
    if realtime:
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(RT_PRIORITY))
            return f"SCHED_FIFO {RT_PRIORITY}"
        except OSError:
            pass
    try:
        os.setpriority(os.PRIO_PROCESS, 0, -10)
        return "nice -10"
    except OSError:
        return "normal"


class Daemon:
    """The loop on the TUN; counters are written by a side thread, because a file write on a
    busy disk can take milliseconds and would make every queued packet that late."""

    def __init__(self, tun: Tun, line: DelayLine, stats_file: Path | None, period: float) -> None:
        self.tun, self.line = tun, line
        self.stats_file, self.period = stats_file, period
        self.stopping = False
        self.started = time.time()
        self.priority = "normal"
        self._kick = threading.Event()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def request_stop(self, signum: int, frame: object) -> None:
        self.stopping = True
        self._kick.set()

    def request_stats(self, signum: int, frame: object) -> None:
        self._kick.set()

    def serve(self, realtime: bool) -> None:
        self.priority = raise_priority(realtime)
        # The writer shares the loop's policy: a normal-priority thread holding the GIL while
        # the busy host runs others would hold up the real-time loop behind it.
        writer = threading.Thread(target=self._write_loop, name="wan-stats", daemon=True)
        writer.start()
        old_wakeup = signal.set_wakeup_fd(self._wake_w)
        try:
            self._loop()
        finally:
            signal.set_wakeup_fd(old_wakeup)
            os.close(self._wake_r)
            os.close(self._wake_w)
            self.stopping = True
            self._kick.set()
            writer.join(timeout=10)
            self.write_stats()

    def _loop(self) -> None:
        """Release what is due, wait until the next release or a packet, read a batch; repeat."""
        fd, line, heap = self.tun.fd, self.line, self.line.heap
        read, mono, push = os.read, time.monotonic, line.push
        write = functools.partial(os.write, fd)
        watch = [fd, self._wake_r]
        while not self.stopping:
            if heap:
                line.release_due(mono, write)
            wait = heap[0][0] - mono() if heap else IDLE_WAIT
            ready = select.select(watch, [], [], max(0.0, wait))[0]
            if fd in ready:
                for _ in range(READS_PER_TURN):
                    try:
                        pkt = read(fd, READ_SIZE)
                    except BlockingIOError:
                        break
                    now = mono()
                    push(pkt, now)
                    if heap and now - heap[0][0] > MAX_READ_LATE:
                        break  # something is overdue: release it before reading on
            if self._wake_r in ready:
                os.read(self._wake_r, 4096)

    def _write_loop(self) -> None:
        while not self.stopping:
            self._kick.wait(self.period)
            self._kick.clear()
            if not self.stopping:
                self.write_stats()

    def write_stats(self) -> None:
        if self.stats_file is None:
            return
        doc = {"path": "tun", "tun": self.tun.name, "offload": self.tun.offset > 0, "pid": os.getpid(), "priority": self.priority, "since": self.started, "time": time.time(), **self.line.stats.to_map()}
        tmp = self.stats_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc))
        tmp.replace(self.stats_file)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="node_agent.wan.daemon", description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--config", required=True, help="JSON: tun, table, nodes, settings")
    p.add_argument("--netns", help="run inside this network namespace (a path such as /run/netns/X)")
    p.add_argument("--ready-file", help="written (JSON) once the TUN and the routes are in place")
    p.add_argument("--stats-file", help="counters as JSON, rewritten every stats_period seconds")
    p.add_argument("--log-level", default="warning")
    a = p.parse_args(argv)
    setup_logging(a.log_level)
    try:
        doc, nodes, settings = load_config(Path(a.config))
    except SpecError as exc:
        print(f"wan daemon: {exc.reason}", file=sys.stderr)
        return 2
    if a.netns:
        enter_netns(a.netns)
    try:
        tun = open_tun(doc["tun"])
    except TunError as exc:
        print(f"wan daemon: {exc}", file=sys.stderr)
        return 1
    plan = RoutePlan(tun.name, int(doc["table"]), tuple(n.bridge for n in nodes), tuple(n.subnet for n in nodes))
    routing = TunRouting(plan)
    daemon = Daemon(tun, make_line(nodes, settings, tun.offset), Path(a.stats_file) if a.stats_file else None, float(doc.get("stats_period", 1.0)))
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, daemon.request_stop)
    signal.signal(signal.SIGUSR1, daemon.request_stats)  # write the counters now
    try:
        routing.install()
    except RoutingError as exc:
        tun.close()
        print(f"wan daemon: {exc}", file=sys.stderr)
        return 1
    try:
        if a.ready_file:
            Path(a.ready_file).write_text(json.dumps({"tun": tun.name, "offload": tun.offset > 0, "pid": os.getpid()}))
        log.info("delaying traffic between %d nodes through %s (offload %s)", len(nodes), tun.name, tun.offset > 0)
        gc.freeze()
        gc.disable()  # packets and their queues make no reference cycles: no collector pauses
        daemon.serve(settings.realtime)
    finally:
        routing.remove()
        tun.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
