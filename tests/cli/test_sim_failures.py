"""Simulated machines fail and come back while ``slicemesh sim`` serves on, as a user drives it
from a second terminal: ``slicemesh sim fail|restore|status``, and a host process killed from
outside."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.cli.test_cli import ROOT, SLICEMESH, run, write
from tests.conftest import wait_for

pytestmark = pytest.mark.timeout(120)

KEEP = """
name: kept
description: waits for its node
on_node_failure: keep
placement:
  locations: [{site: %s}]
"""


class RunningSim:
    """``slicemesh sim`` with 6 nodes, 3 per process, its stderr collected line by line."""

    def __init__(self, tmp: Path) -> None:
        self.state = tmp / "sim"
        args = [*SLICEMESH, "sim", "--nodes", "6", "--agents-per-process", "3", "--state-dir", str(self.state)]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        assert self.proc.stdout is not None and self.proc.stderr is not None
        line = self.proc.stdout.readline()
        assert line.startswith("controller: "), line
        self.env = {**os.environ, "SLICEMESH_CONTROLLER": line.split()[1]}
        self.said: list[str] = []
        threading.Thread(target=self._collect, daemon=True).start()

    def _collect(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.said.append(line.rstrip("\n"))

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run(*args, env=self.env)

    def json(self, *args: str) -> Any:
        r = self.cli(*args, "--json")
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    def node_states(self) -> dict[str, str]:
        return {n["name"]: n["state"] for n in self.json("nodes")}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            self.proc.wait(timeout=30)


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[RunningSim]:
    s = RunningSim(tmp_path)
    try:
        yield s
    finally:
        s.stop()


def test_fail_and_restore_a_node_from_another_terminal(sim: RunningSim, tmp_path: Path) -> None:
    status = sim.json("sim", "status")
    assert status["failed"] == {} and len(status["pids"]) == 6 and len(set(status["pids"].values())) == 2
    site = sorted(status["pids"])[0].rsplit("-", 1)[0]
    assert sim.cli("create", write(tmp_path, KEEP % site), "--wait").returncode == 0
    node = sim.json("show", "kept")["slivers"][0]["node"]
    siblings = [n for n, pid in status["pids"].items() if pid == status["pids"][node] and n != node]
    # `slicemesh nodes` shows what a refusal is checked against: capacity, reserve, allocated, placeable
    shown = next(n for n in sim.json("nodes") if n["name"] == node)
    for key in ("cpu", "memory"):
        assert shown["placeable"][key] == (shown["capacity"][key] - shown["reserve"][key]) * shown["overbook"]
    assert shown["allocated"]["cpu"] == 0.25 and shown["allocated"]["memory"] == 256 << 20
    row = next(line for line in sim.cli("nodes").stdout.splitlines() if line.startswith(node + " "))
    cap, res, room = shown["capacity"]["cpu"], shown["reserve"]["cpu"], shown["placeable"]["cpu"]
    assert f"0.25/{room:g} ({cap:g}-{res:g})" in row and "256Mi/" in row, row

    r = sim.cli("sim", "fail", node)
    assert r.returncode == 0, r.stderr
    assert f"node {node} failed: its agent in process {status['pids'][node]} was ended as a crash ends it; the 2 other nodes there serve on" in r.stdout
    wait_for(lambda: sim.node_states()[node] == "down", timeout=15, what=f"{node} down")
    states = sim.node_states()
    assert all(states[n] == "up" for n in siblings), f"only the node named fails, its process's others come back: {states}"
    assert sim.json("show", "kept")["slivers"][0]["state"] != "running"
    again = sim.cli("sim", "fail", node).stderr.strip()
    assert again.startswith(f"slicemesh: {node} has already failed (failed on request") and again.endswith(f"`slicemesh sim restore {node}` starts it again")
    assert sim.cli("sim", "fail", "no-such-node").stderr.strip() == "slicemesh: no simulated node 'no-such-node' in this simulation"
    failed = sim.json("sim", "status")["failed"]
    assert list(failed) == [node]

    r = sim.cli("sim", "restore", node)
    assert r.returncode == 0 and f"node {node} restored" in r.stdout and r.stdout.rstrip().endswith("up"), r.stdout + r.stderr
    wait_for(lambda: sim.json("show", "kept")["slivers"][0]["state"] == "running", timeout=15, what="the sliver re-adopted")
    assert sim.json("show", "kept")["slivers"][0]["node"] == node, "keep: the sliver waited for its node"
    assert "has not failed" in sim.cli("sim", "restore", node).stderr
    # restored, it runs alone in its process: failing it now is a SIGKILL of that process
    pid = sim.json("sim", "status")["pids"][node]
    assert len([n for n, p in sim.json("sim", "status")["pids"].items() if p == pid]) == 1
    assert f"node {node} failed: its agent process {pid} was killed with SIGKILL" in sim.cli("sim", "fail", node).stdout
    wait_for(lambda: sim.node_states()[node] == "down", timeout=15, what=f"{node} down again")
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert sim.cli("sim", "restore", node).returncode == 0
    assert any(f"node {node} failed" in line for line in sim.said) and any(f"node {node} restored" in line for line in sim.said)


def test_a_host_process_dying_is_a_node_failure_not_the_end(sim: RunningSim) -> None:
    pids: dict[str, int] = sim.json("sim", "status")["pids"]
    victim_pid = sorted(set(pids.values()))[0]
    dead = sorted(n for n, p in pids.items() if p == victim_pid)
    os.kill(victim_pid, signal.SIGKILL)  # what an OOM kill or a crash of that process does
    line = wait_for(lambda: next((s for s in sim.said if s.startswith("nodes failed:")), None), timeout=10, what="the sim says which nodes died")
    assert sorted(line.split(": ", 1)[1].split(" (")[0].split(", ")) == dead and "killed by SIGKILL" in line
    wait_for(lambda: all(sim.node_states()[n] == "down" for n in dead), timeout=15, what="its nodes down")
    assert sim.proc.poll() is None, "the simulation serves on"
    assert sorted(sim.json("sim", "status")["failed"]) == dead
    for n in dead:
        assert sim.cli("sim", "restore", n).returncode == 0
    assert all(s == "up" for s in sim.node_states().values())
    run_files = [sim.state / "sim.json", *Path(os.environ["SLICEMESH_CONFIG_DIR"], "sims").glob("*.json")]
    assert all(p.exists() for p in run_files) and len(run_files) == 2
    sim.stop()
    assert sim.proc.returncode == 0
    assert not any(p.exists() for p in run_files), "the run files go with the simulation"
    assert "no running `slicemesh sim` found" in run("sim", "status").stderr
