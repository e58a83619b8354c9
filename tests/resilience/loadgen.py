"""Load: many clients, each a closed loop of create, show, renew, show, delete on slices of
its own, against a controller; run as worker processes (``python -m tests.resilience.loadgen``)
so the clients' own Python does not slow the controller it measures.

One client is one DEALER connection with one request outstanding, as a person at the CLI.
Every tenth create asks for more than any node has: its refusal (``infeasible``) is the
expected one. Each worker prints one JSON object: per operation the latencies (ms) of the
requests answered, and every answer that was neither ok nor an expected refusal.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slices import identity
from slices.codec import decode, encode, new_id
from slices.protocol import CreateSlice, DeleteSlice, Error, Message, Ok, RenewSlice, ShowSlice
from slices.transport import Dealer, Poller

EXPECTED_REFUSALS = {"infeasible"}
CYCLE = ("create", "show", "renew", "show", "delete")


def doc(name: str, impossible: bool) -> dict[str, Any]:
    return {
        "name": name,
        "description": "load: created, shown, renewed and deleted again and again",
        "resources": {"cpu": 200 if impossible else 0.05, "memory": "32Mi"},
        "placement": {"count": 3, "distinct": "none"},
        "lifetime": "1h",
    }


@dataclass
class Loop:
    """One client: where it is in its cycle, and its slice."""

    name: str
    step: int = 0
    serial: int = 0
    impossible: bool = False

    def message(self) -> tuple[str, Message]:
        op = CYCLE[self.step]
        if op == "create":
            self.serial += 1
            self.impossible = self.serial % 10 == 0
            return op, CreateSlice(spec=doc(self.slice, self.impossible))
        if op == "show":
            return op, ShowSlice(name=self.slice)
        if op == "renew":
            return op, RenewSlice(name=self.slice, seconds=600)
        return op, DeleteSlice(name=self.slice)

    @property
    def slice(self) -> str:
        return f"{self.name}-{self.serial}"

    def advance(self, refused: bool) -> None:
        self.step = 0 if refused else (self.step + 1) % len(CYCLE)


@dataclass
class Tally:
    latencies: dict[str, list[float]] = field(default_factory=lambda: {op: [] for op in set(CYCLE)})
    refusals: int = 0
    errors: list[str] = field(default_factory=list)
    unanswered: int = 0


def run(url: str, ident: identity.Identity, clients: int, seconds: float, tag: str, timeout: float = 30.0) -> Tally:
    dealers = [Dealer(url, f"load-{tag}-{i}", ident.keys) for i in range(clients)]
    loops = [Loop(f"l{tag}-{i}") for i in range(clients)]
    poller = Poller()
    for d in dealers:
        poller.add(d)
    tally = Tally()
    pending: dict[str, tuple[int, str, float]] = {}  # request id -> (client, op, sent)
    end = time.monotonic() + seconds

    def send(i: int) -> None:
        op, msg = loops[i].message()
        msg_id = new_id()
        pending[msg_id] = (i, op, time.perf_counter())
        dealers[i].send(encode(msg, id=msg_id, sender=dealers[i].identity))

    for i in range(clients):
        send(i)
    last_answer = time.monotonic()
    while pending and time.monotonic() - last_answer < timeout:
        poller.poll(0.2)
        for i, d in enumerate(dealers):
            while (frame := d.recv()) is not None:
                env = decode(frame, max_bytes=64 << 20)
                got = pending.pop(env.id, None)
                if got is None:
                    continue
                last_answer = time.monotonic()
                _, op, sent = got
                tally.latencies[op].append((time.perf_counter() - sent) * 1000)
                refused = isinstance(env.msg, Error) and env.msg.code in EXPECTED_REFUSALS and op == "create" and loops[i].impossible
                if refused:
                    tally.refusals += 1
                elif not isinstance(env.msg, Ok):
                    tally.errors.append(f"{op} {loops[i].slice}: {env.msg.code if isinstance(env.msg, Error) else env.type}: {getattr(env.msg, 'reason', '')}"[:300])
                loops[i].advance(refused)
                if time.monotonic() < end or loops[i].step != 0:  # after the end: finish the cycle, leave nothing behind
                    send(i)
    tally.unanswered = len(pending)
    for d in dealers:
        d.close()
    return tally


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--identity", required=True, help="an identity file (the admin's)")
    p.add_argument("--clients", type=int, required=True)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--tag", default=str(os.getpid()))
    a = p.parse_args()
    ident = identity.read(Path(a.identity))
    tally = run(a.url, ident, a.clients, a.seconds, a.tag)
    json.dump({"latencies": tally.latencies, "refusals": tally.refusals, "errors": tally.errors, "unanswered": tally.unanswered}, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
