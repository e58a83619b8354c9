"""What the benchmarks share: goals and tables, slice specs, percentiles, process handling.

Only loopback traffic; every process a benchmark starts is stopped (SIGTERM, then SIGKILL)
in a ``finally``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from benchmarks.machine import describe, header
from slices.simcluster import SimCluster
from slices.transport import ClientKeys, Dealer, Poller

ANCHORS = "Nomad C1M ~3,750 containers/s; Kubernetes scheduler 100-400 pods/s; PlanetLab ~1,000 nodes at ~500 sites"


@dataclass(frozen=True)
class Goal:
    """One figure against its goal: ``at_least`` (throughput) or at most (latency, memory)."""

    label: str
    value: float
    target: float
    at_least: bool
    unit: str = ""

    @property
    def met(self) -> bool:
        return self.value >= self.target if self.at_least else self.value <= self.target

    def verdict(self) -> str:
        if self.met:
            return "met"
        if self.at_least:
            short = (self.target - self.value) / self.target * 100 if self.target else 0.0
            return f"MISSED by {_num(self.target - self.value)}{self.unit} ({short:.0f}% short)"
        if not self.target:
            return f"MISSED by {_num(self.value - self.target)}{self.unit}"
        over = (self.value - self.target) / self.target * 100
        return f"MISSED by {_num(self.value - self.target)}{self.unit} ({over:.0f}% over)"

    def row(self) -> list[str]:
        sign = ">=" if self.at_least else "<="
        return [self.label, f"{_num(self.value)}{self.unit}", f"{sign} {_num(self.target)}{self.unit}", self.verdict()]


def _num(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"


def out(args: Any) -> Any:
    """Where the human table goes: stderr when stdout must hold only the JSON."""
    return sys.stderr if getattr(args, "json", False) else sys.stdout


def table(rows: Sequence[Sequence[str]], head: Sequence[str]) -> str:
    cells = [list(head), *[list(r) for r in rows]]
    widths = [max(len(str(r[i])) for r in cells) for i in range(len(head))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def report(args: Any, title: str, anchor: str, measured: Sequence[tuple[str, str]], goals: Sequence[Goal], extra: str = "") -> None:
    """Print the standard benchmark report: header, what was measured, goals met or missed."""
    stream = out(args)
    print(header(title, anchor), file=stream)
    print(table([list(m) for m in measured], ["measured", "value"]), file=stream)
    if goals:
        print("", file=stream)
        print(table([g.row() for g in goals], ["goal", "value", "target", "verdict"]), file=stream)
    if extra:
        print("\n" + extra, file=stream)
    stream.flush()


def machine_json() -> dict[str, Any]:
    return describe()


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[k]


def median(values: Iterable[float]) -> float:
    vals = list(values)
    return statistics.median(vals) if vals else 0.0


def slice_doc(name: str, count: int, *, locations: list[dict[str, Any]] | None = None, distinct: str = "site", min_distance_km: float | None = None, cpu: float = 0.1, memory: str = "64Mi", lifetime: str = "1d") -> dict[str, Any]:
    """A slice spec document as a researcher writes it (before validation)."""
    placement: dict[str, Any] = {"count": count, "distinct": distinct}
    if locations:
        placement["locations"] = locations
    if min_distance_km:
        placement["min_distance_km"] = min_distance_km
    return {
        "name": name,
        "description": "benchmark slice",
        "lifetime": lifetime,
        "resources": {"cpu": cpu, "memory": memory},
        "placement": placement,
    }


#: The region mix every benchmark slice asks for (then "anywhere" for the rest).
REGION_MIX: tuple[dict[str, Any], ...] = (
    {"region": "north-america", "count": 3},
    {"region": "europe", "count": 3},
    {"region": "asia", "count": 2},
)


def mixed_doc(name: str, count: int = 10, min_distance_km: float = 100.0) -> dict[str, Any]:
    """``count`` slivers: a region mix, ``distinct: site`` and ``min_distance_km``."""
    locs = [dict(loc) for loc in REGION_MIX if count >= 8]
    return slice_doc(name, count, locations=locs, distinct="site", min_distance_km=min_distance_km)


def add_keep_argument(p: Any) -> None:
    p.add_argument("--keep", action="store_true", help="keep each cluster's directory (controller and agents' logs, state) and print where it is")


def add_curve_argument(p: Any) -> None:
    p.add_argument("--no-curve", action="store_true", help="benchmark only: every socket in plaintext, to measure what CURVE costs (benchmarks/plaintext.py)")


def stop_process(proc: subprocess.Popen[bytes] | subprocess.Popen[str], timeout: float = 10.0) -> None:
    """SIGTERM, wait, then SIGKILL: nothing a benchmark starts outlives it."""
    if proc.poll() is not None:
        return
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    except ProcessLookupError:
        pass


def rss_mib(pid: int) -> float:
    import psutil

    return float(psutil.Process(pid).memory_info().rss) / 2**20


def dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=str)


# ---- pipelined requests -----------------------------------------------------------------------


@dataclass
class Outcome:
    """One request's fate as the client saw it."""

    index: int
    sent: float
    done: float
    ok: bool
    result: dict[str, Any]

    @property
    def ms(self) -> float:
        return (self.done - self.sent) * 1000


class Pipeline:
    """Several DEALER connections with many requests outstanding on each: no round trip per request.

    Requests are sent in order, at most ``window`` unanswered per connection; ``run`` returns one
    ``Outcome`` per request. Replies are matched by request id, exactly as ``Client`` does.
    """

    def __init__(self, url: str, keys: ClientKeys, *, connections: int = 4, window: int = 32, timeout: float = 60.0) -> None:
        self.dealers = [Dealer(url, f"bench-{os.getpid()}-{i}", keys) for i in range(connections)]
        self.poller = Poller()
        for d in self.dealers:
            self.poller.add(d)
        self.window = window
        self.timeout = timeout

    def close(self) -> None:
        for d in self.dealers:
            d.close()

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, messages: Sequence[Any], on_reply: Callable[[Outcome], None] | None = None) -> list[Outcome]:
        from slices.codec import decode, encode, new_id
        from slices.errors import ProtocolError
        from slices.protocol import Error, Ok

        outcomes: list[Outcome | None] = [None] * len(messages)
        pending: dict[str, tuple[int, float, int]] = {}  # id -> (index, sent, connection)
        in_flight = [0] * len(self.dealers)
        nxt = 0
        deadline = time.monotonic() + self.timeout
        while nxt < len(messages) or pending:
            for c, dealer in enumerate(self.dealers):
                while nxt < len(messages) and in_flight[c] < self.window:
                    msg_id = new_id()
                    pending[msg_id] = (nxt, time.perf_counter(), c)
                    dealer.send(encode(messages[nxt], id=msg_id, sender=dealer.identity))
                    in_flight[c] += 1
                    nxt += 1
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(pending)} requests unanswered after {self.timeout:g}s")
            for ready in self.poller.poll(0.5):
                assert isinstance(ready, Dealer)  # only dealers are registered
                while (frame := ready.recv()) is not None:
                    try:
                        env = decode(frame)
                    except ProtocolError:
                        continue
                    got = pending.pop(env.id, None)
                    if got is None:
                        continue
                    index, sent, c = got
                    in_flight[c] -= 1
                    msg = env.msg
                    ok = isinstance(msg, Ok)
                    result = msg.result if isinstance(msg, Ok) else {"code": msg.code, "reason": msg.reason} if isinstance(msg, Error) else {}
                    outcome = Outcome(index, sent, time.perf_counter(), ok, result)
                    outcomes[index] = outcome
                    if on_reply is not None:
                        on_reply(outcome)
        return [o for o in outcomes if o is not None]


# ---- a cluster of processes -------------------------------------------------------------------


class BenchCluster(SimCluster):
    """``slicemesh sim``'s cluster (same node sizes, same processes) with a benchmark's knobs:
    controller settings, agents per process, and whether simulated agents keep state on disk.
    Its directory is temporary: removed at the end, unless ``keep`` (``--keep``: the logs and
    state of a run, to find out afterwards why it went as it did)."""

    def __init__(
        self,
        *,
        nodes: int | None,
        topology: str | None = None,
        per_process: int = 0,
        agent_state: bool = True,
        controller: dict[str, Any] | None = None,
        heartbeat_period: float = 1.0,
        log_level: str = "warning",
        curve: bool = True,
        agents_nice: int = 0,
        keep: bool = False,
    ) -> None:
        self.curve = curve
        if not curve:  # this process and every one it starts (benchmarks/plaintext.py)
            from benchmarks import plaintext

            plaintext.install()
        super().__init__(
            nodes=nodes,
            topology=topology,
            per_process=per_process,
            agent_state=agent_state,
            controller_settings=controller,
            heartbeat_period=heartbeat_period,
            log_level=log_level,
            agents_nice=agents_nice,
        )
        self.keep_state = keep  # SimCluster.stop leaves the directory too (a benchmark names none of its own)

    def spawn(self, args: list[str], log_name: str, *, control: bool = False) -> subprocess.Popen[bytes]:
        if not self.curve:
            from benchmarks import plaintext

            args = plaintext.command(args)
        return super().spawn(args, log_name, control=control)

    def cleanup(self) -> None:
        if self.keep_state:
            print(f"kept the cluster's directory (logs, state): {self.dir}", file=sys.stderr)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop()
        finally:
            self.cleanup()
