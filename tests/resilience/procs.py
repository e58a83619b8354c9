"""A controller as a real process (so it can be killed for real and restarted on the same
database and port), and the checks every crash test ends with.

The ledger check is the promise the crash tests keep: after a restart and convergence, every
slice is whole (its slivers all placed, none twice), every node's allocated capacity is the
sum of the reservations of the slivers it holds, the store agrees with memory, and what the
agents run is exactly what the controller placed, each sliver on one node.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from slices import identity
from slices.client import Client
from slices.identity import Identity
from slices.protocol import ListNodes, ListSlices, ShowSlice, SliceView, TrustKeys
from slices.statefile import read_scratch
from slices.transport import Keypair
from tests.conftest import AgentsThread, wait_for

ROOT = Path(__file__).resolve().parents[2]


class ControllerProcess:
    """``slicemesh controller`` in its own process, on ``port`` and ``user_port`` (0: free
    ones, kept for restarts), with ``faults`` armed (``slices/faults.py``)."""

    def __init__(self, state: Path, *, port: int = 0, user_port: int = 0, faults: str = "", period: float = 0.2, env: dict[str, str] | None = None) -> None:
        self.state = state
        self.db = state / "c.db"
        self.keys_dir = state / "keys"
        ready = state / "ready"
        ready.unlink(missing_ok=True)
        self.log = state / f"controller-{time.monotonic_ns()}.log"
        cmd = [sys.executable, "-m", "slices.cli", "controller", "--db", str(self.db), "--keys-dir", str(self.keys_dir)]
        cmd += ["--listen", f"tcp://127.0.0.1:{port or '*'}", "--user-listen", f"tcp://127.0.0.1:{user_port or '*'}", "--ready-file", str(ready), "--heartbeat-period", str(period), "--log-level", "warning"]
        full_env = {**os.environ, "SLICEMESH_FAULTS": faults, "SLICEMESH_LEASE_CHECK_PERIOD": "0.05", "SLICEMESH_RESTART_GRACE": "4", **(env or {})}
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: ready.exists() or self.proc.poll() is not None, timeout=30, what="the controller to listen")
            if self.proc.poll() is not None:
                raise AssertionError(f"the controller exited at start ({self.proc.returncode}): {self.output()}")
            self.url = ready.read_text().strip()
            self.port = int(self.url.rsplit(":", 1)[1])
            admin = identity.read(self.keys_dir / "admin.identity.yaml")
            self.user_port = user_port or int(admin.controller.rsplit(":", 1)[1])  # the identity names the users' socket
            self.admin = Identity(admin.name, self.url, admin.server_key, admin.own, admin.user)
        except BaseException:
            self.proc.kill()  # a start that failed leaves no controller behind (one ran on for an hour)
            self.proc.wait(timeout=10)
            raise

    @property
    def server_key(self) -> str:
        return self.admin.server_key

    def client(self, timeout: float = 10.0, first_try: float = 0.3) -> Client:
        return Client(self.url, identity=self.admin, timeout=timeout, first_try=first_try)

    def trust(self, keys: dict[str, Keypair]) -> None:
        with self.client() as c:
            c.call(TrustKeys(agents={name: pair.public for name, pair in keys.items()}))

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def died_at(self, point: str, timeout: float = 20.0) -> None:
        """Wait for the process to kill itself at ``point``."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the controller did not reach fault point {point} in {timeout} s") from None
        assert self.proc.returncode == -signal.SIGKILL, f"exit {self.proc.returncode}: {self.output()[-2000:]}"
        assert f"fault {point}: SIGKILL" in self.output()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)

    def rss(self) -> int:
        """Resident memory of the process, in bytes."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")


def held(groups: list[AgentsThread]) -> Counter[tuple[str, str]]:
    """(sliver, node) for every sliver an agent holds, counted (a sliver twice is a bug)."""
    out: Counter[tuple[str, str]] = Counter()
    for group in groups:
        for agent in group.agents:
            for sid in list(agent.backends["container"].slivers):  # type: ignore[attr-defined]
                out[(sid, agent.name)] += 1
    return out


def sim_holdings(root: Path) -> Counter[tuple[str, str]]:
    """What simulated agents in other processes hold, from their backends' state files
    (the scratch slots of ``<state>/<node>/sim-slivers.json``, written on each host's scratch
    thread after a reconcile, so read as what converges)."""
    out: Counter[tuple[str, str]] = Counter()
    for node in {slot.parent for slot in root.glob("**/sim-slivers.json.[01]")}:
        with contextlib.suppress(OSError, ValueError, TypeError):
            for sid in json.loads(read_scratch(node / "sim-slivers.json") or b"{}"):
                out[(sid, node.name)] += 1
    return out


def views(c: Client) -> dict[str, SliceView]:
    names = [s.name for s in c.call(ListSlices(limit=1000)).slices]
    return {n: c.call(ShowSlice(name=n)) for n in names}


def ledger_problems(c: Client, groups: list[AgentsThread] | Counter[tuple[str, str]], db: Path) -> list[str]:
    """Everything that is not as it must be once a cluster has converged; [] when all is.
    ``groups``: the agents in this process, or what agents elsewhere hold ((sliver, node) counted)."""
    problems: list[str] = []
    shown = views(c)
    placed: Counter[str] = Counter()
    per_node: dict[str, list[float]] = {}
    where: dict[str, str] = {}
    for name, v in shown.items():
        if v.state != "running":
            problems.append(f"slice {name} is {v.state}: {v.problem}")
        if len(v.slivers) != v.slivers_wanted:
            problems.append(f"slice {name} has {len(v.slivers)} slivers of {v.slivers_wanted}")
        for s in v.slivers:
            placed[s.id] += 1
            where[s.id] = s.node
            if s.state != "exited":
                per_node.setdefault(s.node, []).append(v.resources.cpu)
    problems += [f"sliver {sid} appears {n} times" for sid, n in placed.items() if n > 1]
    for node in c.call(ListNodes(limit=1000)).nodes:
        want = sum(per_node.get(node.name, []))
        if abs(node.allocated.cpu - want) > 1e-6:
            problems.append(f"node {node.name} has {node.allocated.cpu} cpu allocated; its slivers hold {want}")
    running = groups if isinstance(groups, Counter) else held(groups)
    problems += [f"sliver {sid} runs {n} times on {node}" for (sid, node), n in running.items() if n > 1]
    on_agents = {sid: node for sid, node in running}
    twice = sorted(sid for sid, n in Counter(sid for sid, _ in running).items() if n > 1)
    if set(on_agents) != set(where) or twice:
        extra = sorted(set(on_agents) - set(where))
        missing = sorted(set(where) - set(on_agents))
        problems.append(f"agents run what nobody placed {extra}, miss {missing}, run on two nodes {twice}")
    problems += [f"sliver {sid} runs on {on_agents[sid]}, placed on {node}" for sid, node in where.items() if sid in on_agents and on_agents[sid] != node]
    problems += store_problems(db, where)
    return problems


def store_problems(db: Path, where: dict[str, str]) -> list[str]:
    """The store, read directly: the same slivers on the same nodes, nothing half-written."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        rows = dict(con.execute("SELECT s.id, a.node FROM slivers s LEFT JOIN allocations a ON a.sliver = s.id").fetchall())
        moves = con.execute("SELECT count(*) FROM moves").fetchone()[0]
        dangling = con.execute("SELECT count(*) FROM allocations WHERE sliver NOT IN (SELECT id FROM slivers)").fetchone()[0]
    finally:
        con.close()
    out = []
    if rows != where:
        out.append(f"the store places {rows}, the controller shows {where}")
    if moves:
        out.append(f"{moves} moves still open in the store")
    if dangling:
        out.append(f"{dangling} allocations without a sliver")
    return out


def converged(c: Client, groups: list[AgentsThread] | Callable[[], Counter[tuple[str, str]]], db: Path, timeout: float = 30.0) -> None:
    """Wait until the ledger holds; fail with what is still wrong."""
    last: list[str] = []

    def ok() -> bool:
        nonlocal last
        with contextlib.suppress(Exception):
            last = ledger_problems(c, groups() if callable(groups) else groups, db)
            return not last
        return False

    try:
        wait_for(ok, timeout=timeout, what="the cluster to converge")
    except Exception:
        raise AssertionError("not converged: " + "; ".join(last[:10])) from None


def spec(name: str, count: int = 2, **placement: Any) -> dict[str, Any]:
    return {
        "name": name,
        "description": "a slice the crash tests break things under",
        "resources": {"cpu": 0.25, "memory": "64Mi"},
        "placement": {"count": count, "distinct": "none", **placement},
    }
