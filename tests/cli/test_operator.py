"""An operator's path: `slicemesh controller` and `slicemesh agent` processes with config files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.cli.test_cli import ROOT, SLICEMESH, run
from tests.conftest import wait_for

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def controller_proc(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A controller as an operator starts it, and the operator logged in as its first admin."""
    ready = tmp_path / "url"
    cfg = tmp_path / "controller.yaml"
    cfg.write_text(f"listen: tcp://127.0.0.1:*\ndb: {tmp_path / 'c.db'}\nkeys_dir: {tmp_path / 'keys'}\nheartbeat_period: 0.2\nliveness_misses: 3\n")
    p = subprocess.Popen([*SLICEMESH, "controller", "--config", str(cfg), "--ready-file", str(ready)], cwd=ROOT, stderr=subprocess.DEVNULL)
    try:
        wait_for(ready.exists, what="controller ready")
        url = ready.read_text().strip()
        login = run("login", "--identity", str(tmp_path / "keys" / "admin.identity.yaml"), "--controller", url)
        assert login.returncode == 0, login.stderr
        yield url, p
    finally:
        p.terminate()
        p.wait(timeout=10)


def agent_config(tmp: Path, url: str, name: str, **extra: str) -> Path:
    cfg = tmp / f"{name}.yaml"
    settings = {
        "controller": url,
        "controller_key": str(tmp / "keys" / "controller.key"),
        "name": name,
        "site": "princeton",
        "location": "{city: Princeton, country: US, region: north-america, lat: 40.3431, lon: -74.6551}",
        "backends": "{container: sim, vm: sim}",
        "reserve": "{cpu: 1, memory: 512Mi, disk: 1Gi}",
        "state_dir": str(tmp / name),
        "heartbeat_period": "0.2",
        **extra,
    }
    cfg.write_text("".join(f"{k}: {v}\n" for k, v in settings.items()))
    return cfg


def test_agent_registers_with_measured_capacity_and_is_marked_down_when_killed(controller_proc: tuple[str, subprocess.Popen[bytes]], tmp_path: Path) -> None:
    url, _ = controller_proc
    env = {**os.environ, "SLICEMESH_CONTROLLER": url}
    agent = subprocess.Popen([*SLICEMESH, "agent", "--config", str(agent_config(tmp_path, url, "node1"))], cwd=ROOT, stderr=subprocess.PIPE)
    try:
        # Salt's way: the new key waits as pending until the operator accepts it.
        pending = wait_for(lambda: [k for k in json.loads(run("keys", "--json", env=env).stdout) if k["state"] == "pending"], what="a pending key")
        assert [(k["name"], k["kind"]) for k in pending] == [("node1", "agent")]
        assert json.loads(run("nodes", "--json", env=env).stdout) == [], "an unaccepted agent is not a node"
        accepted = run("keys", "accept", "node1", env=env)
        assert accepted.returncode == 0 and "agent node1: key accepted" in accepted.stdout, accepted.stderr
        nodes = wait_for(lambda: json.loads(run("nodes", "--json", env=env).stdout) or None, what="agent registered")
        n = nodes[0]
        assert n["name"] == "node1" and n["state"] == "up" and n["site"] == "princeton"
        assert n["capacity"]["cpu"] == psutil.cpu_count()
        assert n["capacity"]["memory"] == psutil.virtual_memory().total
        assert n["backends"] == {"container": "sim", "vm": "sim"}
        assert n["reserve"]["cpu"] == 1
        spec = tmp_path / "s.yaml"
        spec.write_text("name: one\ndescription: one sliver to watch a node die\nplacement: {count: 1}\n")
        assert run("create", str(spec), "--wait", env=env).returncode == 0
        agent.kill()  # kill -9: no goodbye
        agent.wait()
        wait_for(lambda: json.loads(run("nodes", "--json", env=env).stdout)[0]["state"] == "down", timeout=5, what="node marked down")
        shown = json.loads(run("show", "one", "--json", env=env).stdout)
        assert shown["slivers"][0]["state"] == "lost"
        # the operator restarts it: the sliver is re-adopted (sim backend state on disk)
        agent = subprocess.Popen([*SLICEMESH, "agent", "--config", str(agent_config(tmp_path, url, "node1"))], cwd=ROOT, stderr=subprocess.DEVNULL)
        wait_for(lambda: json.loads(run("show", "one", "--json", env=env).stdout)["state"] == "running", what="sliver running again")
    finally:
        agent.terminate()
        agent.wait(timeout=10)


@pytest.mark.parametrize(
    ("extra", "expect"),
    [
        ({"location": "{city: X, country: XX, region: europe, lat: 1, lon: 2}"}, "location.country"),
        ({"backends": "{container: docker}"}, "unknown backend 'docker'"),
        ({"colour": "blue"}, "colour: unknown setting"),
        ({"capacity": "{cpu: 4, memory: 8GB}"}, "capacity.memory"),
    ],
)
def test_bad_agent_config_is_a_clear_error(tmp_path: Path, extra: dict[str, str], expect: str) -> None:
    cfg = agent_config(tmp_path, "tcp://127.0.0.1:1", "node2", **extra)
    r = subprocess.run([*SLICEMESH, "agent", "--config", str(cfg)], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert expect in r.stderr


def test_settings_from_the_environment(controller_proc: tuple[str, subprocess.Popen[bytes]], tmp_path: Path) -> None:
    url, _ = controller_proc
    cfg = agent_config(tmp_path, "tcp://127.0.0.1:1", "node3")  # wrong controller in the file ...
    token = run("keys", "token", "--node", "from-env", "--json", env={**os.environ, "SLICEMESH_CONTROLLER": url})
    assert token.returncode == 0, token.stderr
    env = {**os.environ, "SLICEMESH_CONTROLLER": url, "SLICEMESH_NAME": "from-env"}  # ... the environment wins
    env["SLICEMESH_ENROL_TOKEN"] = json.loads(token.stdout)["token"]  # and enrols it without an operator
    agent = subprocess.Popen([sys.executable, "-m", "slices.cli", "agent", "--config", str(cfg)], cwd=ROOT, env=env, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: [n["name"] for n in json.loads(run("nodes", "--json", env=env).stdout)] == ["from-env"], what="agent named from the environment")
    finally:
        agent.terminate()
        agent.wait(timeout=10)


@pytest.mark.parametrize(("daemon", "setting"), [("controller", "liveness_misses"), ("agent", "cgroup_prefix"), ("agent", "runc.pids_limit")])
def test_list_settings_shows_every_setting_with_its_help(daemon: str, setting: str) -> None:
    r = subprocess.run([*SLICEMESH, daemon, "--list-settings"], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    line = next(line for line in r.stdout.splitlines() if line.startswith(setting + " "))
    assert len(line.split()) >= 4, "name, type, default and a help line"
