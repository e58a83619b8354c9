"""The CLI as a user types it: subprocesses against a running ``slicemesh sim``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.conftest import wait_for

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]
SLICEMESH = [sys.executable, "-m", "slices.cli"]


def run(*args: str, env: dict[str, str] | None = None, stdin: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SLICEMESH, *args], capture_output=True, text=True, env=env, input=stdin, timeout=timeout, cwd=ROOT)


class Sim:
    def __init__(self, tmp: Path, *extra: str) -> None:
        self.proc = subprocess.Popen([*SLICEMESH, "sim", "--nodes", "24", "--state-dir", str(tmp / "sim"), *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.startswith("controller: tcp://127.0.0.1:"), (line, self.proc.stderr.read() if self.proc.poll() is not None else "")  # type: ignore[union-attr]
        self.url = line.split()[1]
        self.env = {**os.environ, "SLICEMESH_CONTROLLER": self.url}
        self.children = psutil.Process(self.proc.pid).children(recursive=True)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[Sim]:
    s = Sim(tmp_path)
    try:
        yield s
    finally:
        s.stop()


def write(tmp: Path, text: str, name: str = "slice.yaml") -> str:
    p = tmp / name
    p.write_text(text)
    return str(p)


GOOD = """
name: web-probe
description: probes web servers from four places
resources: {cpu: 250m, memory: 128Mi}
placement:
  locations:
    - {region: europe, count: 2}
    - {country: US}
    - {near: {lat: -33.9, lon: 18.4}, within_km: 100}
  min_distance_km: 200
"""


def test_researcher_walkthrough(sim: Sim, tmp_path: Path) -> None:
    spec = write(tmp_path, GOOD)
    dry = run("create", spec, "--dry-run", env=sim.env)
    assert dry.returncode == 0, dry.stderr
    assert "nothing was changed" in dry.stdout and "web-probe" not in run("list", env=sim.env).stdout
    created = run("create", spec, "--wait", "--json", env=sim.env)
    assert created.returncode == 0, created.stderr
    body = json.loads(created.stdout)
    assert body["state"] == "running" and len(body["slivers"]) == 4
    shown = json.loads(run("show", "web-probe", "--json", env=sim.env).stdout)
    assert {"name", "state", "expires", "slivers"} <= set(shown)
    for v in shown["slivers"]:
        assert {"node", "site", "city", "country", "region", "lat", "lon", "state"} <= set(v)
    assert sorted(v["region"] for v in shown["slivers"])[:2] == ["africa", "europe"]
    table = run("show", "web-probe", env=sim.env).stdout
    assert "NODE" in table and "running" in table
    assert "web-probe" in run("list", env=sim.env).stdout
    renewed = run("renew", "web-probe", "--for", "7d", "--json", env=sim.env)
    assert json.loads(renewed.stdout)["expires"] > shown["expires"]
    nodes = json.loads(run("nodes", "--json", env=sim.env).stdout)
    assert len(nodes) == 24
    for n in nodes:
        assert {"name", "site", "country", "region", "lat", "lon", "state", "capacity", "allocated"} <= set(n)
        assert n["backends"] == {"container": "sim", "vm": "sim"}
    assert sum(n["allocated"]["cpu"] for n in nodes) == pytest.approx(1.0)
    assert "sim" in run("nodes", env=sim.env).stdout
    assert "princeton" in run("sites", env=sim.env).stdout
    me = run("whoami", env=sim.env)
    assert me.returncode == 0 and "users waited at most" in me.stdout and "times over 50 ms" in me.stdout, me.stdout + me.stderr
    waits = json.loads(run("whoami", "--json", env=sim.env).stdout)
    assert waits["user_wait_max_ms"] >= 0 and waits["user_waits_over_50ms"] >= 0
    deleted = run("delete", "web-probe", env=sim.env)
    assert deleted.returncode == 0 and "deleted" in deleted.stdout
    assert run("show", "web-probe", env=sim.env).returncode == 1


@pytest.mark.parametrize(
    ("text", "expect"),
    [
        ("name: x\ndescription: y\nplacment: {count: 2}\n", "placment: unknown key (did you mean 'placement'?)"),
        ("name: x\ndescription: y\nresources: {memory: 256MB}\n", "resources.memory"),
        ("name: ../x\ndescription: y\n", "name:"),
        ("name: x\ndescription: [unclosed\n", "malformed YAML at line"),
        ("name: x\ndescription: y\nplacement: {locations: [{near: {lat: 1, lon: 2}, within_km: -5}]}\n", "placement.locations[0].within_km: must be > 0"),
        ("name: x\ndescription: y\nplacement: {locations: [{country: JP, count: 5}]}\n", "infeasible"),
    ],
)
def test_bad_input_one_line_error_nothing_changed(sim: Sim, tmp_path: Path, text: str, expect: str) -> None:
    r = run("create", write(tmp_path, text), env=sim.env)
    assert r.returncode == 1
    assert expect in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert r.stdout == ""
    assert run("list", "--json", env=sim.env).stdout.strip() == "[]"
    nodes = json.loads(run("nodes", "--json", env=sim.env).stdout)
    assert sum(n["allocated"]["cpu"] for n in nodes) == 0


def test_an_infeasible_create_in_json_says_how_each_request_fared(sim: Sim, tmp_path: Path) -> None:
    r = run("create", write(tmp_path, "name: x\ndescription: y\nplacement: {locations: [{country: JP, count: 5}]}\n"), "--json", env=sim.env)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1
    error = json.loads(r.stdout)["error"]
    assert error["code"] == "infeasible"
    (req,) = error["details"]["requests"]
    assert (req["wanted"], error["details"]["wanted"]) == (5, 5) and req["placed"] < 5 and "wants 5" in req["text"], error
    assert req["matched"] == len([n for n in json.loads(run("nodes", "--json", env=sim.env).stdout) if n["country"] == "JP"])
    assert error["details"]["suggestions"], "and what would fit"


def test_controller_flag_and_unreachable_controller(tmp_path: Path) -> None:
    r = run("list", "--controller", "tcp://127.0.0.1:1", "--timeout", "1")
    assert r.returncode == 1 and "no identity" in r.stderr and "slicemesh login" in r.stderr, "no key pair: say how to get one"
    assert len(r.stderr.strip().splitlines()) == 1
    from slices import identity
    from slices.transport import new_keypair

    path = identity.write(identity.Identity("x", "tcp://127.0.0.1:1", new_keypair().public, new_keypair()), path=tmp_path / "me.yaml")
    r = run("list", "--controller", "tcp://127.0.0.1:1", "--timeout", "1", env={**os.environ, "SLICEMESH_IDENTITY": str(path)})
    assert r.returncode == 1 and "no reply from the controller" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_sim_stops_cleanly_and_leaves_no_process(tmp_path: Path) -> None:
    s = Sim(tmp_path)
    pids = [p.pid for p in s.children]
    assert len(pids) >= 2
    s.stop(signal.SIGINT)
    assert s.proc.returncode == 0
    wait_for(lambda: not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in pids), timeout=10, what="children gone")


def test_sim_on_the_mlab_topology(tmp_path: Path) -> None:
    topo = ROOT.parent / "shared" / "data" / "mlab-sites.csv"
    if not topo.exists():
        pytest.skip(f"{topo} is not beside this checkout (it is in CI and on developer machines)")
    s = Sim(tmp_path, "--topology", str(topo))
    try:
        nodes = json.loads(run("nodes", "--json", env=s.env).stdout)
        assert len(nodes) == 24
        sites = json.loads(run("sites", "--json", env=s.env).stdout)
        assert len(sites) == 12
    finally:
        s.stop()


def test_demo_runs_and_stops(tmp_path: Path) -> None:
    r = run("demo", timeout=90)
    assert r.returncode == 0, r.stderr
    assert "slice cdn-probe is running" in r.stdout
    for col in ("NODE", "SITE", "CITY", "COUNTRY", "DISTANCE"):
        assert col in r.stdout


def wait_json(*args: str, env: dict[str, Any]) -> Any:
    return json.loads(run(*args, "--json", env=env).stdout)


def test_killed_controller_restarts_with_slices_intact(tmp_path: Path) -> None:
    """kill -9 a controller process; a new one on the same DB serves every slice."""
    db = tmp_path / "c.db"
    ready = tmp_path / "url"

    keys_dir = tmp_path / "keys"

    started: list[subprocess.Popen[str]] = []  # stopped at the end, whatever failed

    def start(listen: str) -> subprocess.Popen[str]:
        ready.unlink(missing_ok=True)
        # The users' socket on a random port each time: by default it would take the agents'
        # port plus one, which on a busy host a client's connection may hold (users are
        # answered on the agents' socket too, the URL this test uses).
        cmd = [*SLICEMESH, "controller", "--listen", listen, "--user-listen", "tcp://127.0.0.1:*", "--db", str(db), "--keys-dir", str(keys_dir), "--ready-file", str(ready)]
        log = tmp_path / f"controller-{len(started)}.log"
        with open(log, "w") as err:
            p = subprocess.Popen(cmd, stderr=err, text=True, cwd=ROOT)
        started.append(p)
        try:
            wait_for(lambda: ready.exists() or p.poll() is not None, what="controller ready")
        except TimeoutError:
            raise AssertionError(f"controller not ready in time; its log:\n{log.read_text()[-3000:]}") from None
        assert p.poll() is None, f"controller exited {p.returncode}; its log:\n{log.read_text()[-3000:]}"
        return p

    first = start("tcp://127.0.0.1:*")
    url = ready.read_text().strip()
    env = {**os.environ, "SLICEMESH_CONTROLLER": url}
    login = run("login", "--identity", str(keys_dir / "admin.identity.yaml"), "--controller", url, env=env)
    assert login.returncode == 0 and "as user admin (admin)" in login.stdout, login.stderr
    agents = subprocess.Popen(
        [sys.executable, "-m", "node_agent.simhost", "--controller", url, "--nodes", str(_nodes_file(tmp_path)), "--keys", str(_trusted_keys(tmp_path, env)), "--state-dir", str(tmp_path / "agents")],
        cwd=ROOT,
    )
    try:
        wait_for(lambda: len(wait_json("nodes", env=env)) == 24, what="agents registered")
        assert run("create", write(tmp_path, GOOD), "--wait", env=env).returncode == 0
        before = wait_json("show", "web-probe", env=env)
        first.kill()
        first.wait()
        time.sleep(0.2)
        start(url)
        after = wait_json("show", "web-probe", env=env)
        assert [v["id"] for v in after["slivers"]] == [v["id"] for v in before["slivers"]]
        assert after["expires"] == before["expires"]
        wait_for(lambda: wait_json("show", "web-probe", env=env)["state"] == "running", what="still running after restart")
    finally:
        agents.terminate()
        agents.wait(timeout=10)
        for p in started:
            if p.poll() is None:
                p.terminate()
                p.wait(timeout=10)


def _trusted_keys(tmp: Path, env: dict[str, str], nodes: list[dict[str, Any]] | None = None) -> Path:
    """Key pairs for simulated agents (default: 24), each pre-seeded as an operator does it."""
    from slices.transport import new_keypair, write_keypair

    nodes = nodes if nodes is not None else json.loads(_nodes_file(tmp).read_text())
    pairs = {n["name"]: new_keypair() for n in nodes}
    for name in list(pairs)[:2]:  # two through the CLI as a user types it, the rest in one request
        public, _ = write_keypair(tmp / name, pairs[name])
        assert run("keys", "add", name, str(public), env=env).returncode == 0
    from slices.client import Client
    from slices.protocol import TrustKeys

    with Client(env["SLICEMESH_CONTROLLER"]) as c:
        c.call(TrustKeys(agents={n: p.public for n, p in pairs.items()}))
    from slices import identity

    server = identity.read(tmp / "keys" / "admin.identity.yaml").server_key
    path = tmp / "agent-keys.json"
    path.write_text(json.dumps({"server": server, "agents": {n: [p.public, p.secret] for n, p in pairs.items()}}))
    return path


def _nodes_file(tmp: Path) -> Path:
    from slices.catalogue import builtin_catalogue
    from slices.simcluster import sim_nodes

    p = tmp / "nodes.json"
    p.write_text(json.dumps(sim_nodes(builtin_catalogue(), 24, "sim")))
    return p


def test_wait_watch_and_exit_codes_as_a_user_types_them(sim: Sim, tmp_path: Path) -> None:
    spec = write(tmp_path, GOOD)
    created = run("create", spec, "--wait", "--json", env=sim.env)
    assert created.returncode == 0 and json.loads(created.stdout)["state"] == "running"
    watch = subprocess.Popen([*SLICEMESH, "show", "web-probe", "--watch"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=sim.env, cwd=ROOT)
    try:
        assert watch.stdout is not None
        import select

        def next_view(within: float) -> bool:
            deadline = time.monotonic() + within
            while (left := deadline - time.monotonic()) > 0:
                if not select.select([watch.stdout], [], [], left)[0]:
                    return False
                if "slice     web-probe" in watch.stdout.readline():  # after the screen-clearing escape
                    return True
            return False

        assert next_view(30), "the first view"
        assert not next_view(2.0), "nothing changed: no second view (and no polling)"
        assert run("renew", "web-probe", "--for", "1d", env=sim.env).returncode == 0
        assert next_view(10), "a change: the watcher is told and shows it again"
    finally:
        watch.terminate()
        watch.wait(timeout=10)
    placed = {(v["id"], v["node"]) for v in json.loads(run("show", "web-probe", "--json", env=sim.env).stdout)["slivers"]}
    deleted = run("delete", "web-probe", "--wait", env=sim.env)
    assert deleted.returncode == 0 and "removed from every node" in deleted.stdout, deleted.stderr
    named = {tuple(line.strip().split(" on ")) for line in deleted.stdout.splitlines()[1:]}
    assert named == placed and len(placed) == 4, (deleted.stdout, placed)  # each released sliver, and where it was


def test_show_has_the_slices_timeline_as_a_table(sim: Sim, tmp_path: Path) -> None:
    spec = write(tmp_path, GOOD.replace("web-probe", "timeline-probe"))
    assert run("create", spec, "--wait", env=sim.env).returncode == 0
    shown = json.loads(run("show", "timeline-probe", "--json", env=sim.env).stdout)
    assert [e["event"] for e in shown["timeline"]] == ["created"]  # the slice's own; each sliver's are its history
    started = {(e["sliver"], e["node"]) for v in shown["slivers"] for e in v["history"] if e["event"] == "started"}
    assert started == {(v["id"], v["node"]) for v in shown["slivers"]}, shown["slivers"]  # each sliver, where it runs
    text = run("show", "timeline-probe", env=sim.env).stdout
    table = text[text.index("timeline (newest last") :].splitlines()
    assert table[1].split() == ["WHEN", "(UTC)", "EVENT", "SLIVER", "NODE", "DETAIL"]
    rows = [line.split() for line in table[2:] if line.strip()]
    n = len(shown["slivers"])
    assert rows[0][1] == "created" and f"{n} slivers placed on {n} nodes" in table[2], table
    assert sorted((r[2], r[3]) for r in rows if r[1] == "started") == sorted(started)
    assert run("delete", "timeline-probe", "--wait", env=sim.env).returncode == 0


def test_list_commands_print_one_json_shape(sim: Sim) -> None:
    """Every list command's ``--json`` is the array of its rows; a page (``--limit``, or the
    audit log, always read a page at a time) is an object with the rows, ``next`` and (where
    counted) ``total``."""
    for args in (["list"], ["nodes"], ["sites"], ["keys"], ["users"], ["sites", "limits"], ["orphans"]):
        r = run(*args, "--json", env=sim.env)
        assert r.returncode == 0, (args, r.stderr)
        rows = json.loads(r.stdout)
        assert isinstance(rows, list) and all(isinstance(row, dict) for row in rows), (args, r.stdout[:300])
    assert {row["name"] for row in json.loads(run("keys", "--json", env=sim.env).stdout)} >= {"admin"}
    page = json.loads(run("nodes", "--json", "--limit", "3", env=sim.env).stdout)
    assert set(page) == {"nodes", "total", "next"} and len(page["nodes"]) == 3
    audit = json.loads(run("audit", "--json", "--limit", "2", env=sim.env).stdout)
    assert set(audit) == {"entries", "next"} and isinstance(audit["entries"], list)


def test_nodes_and_list_page_with_totals(sim: Sim, tmp_path: Path) -> None:
    """``--limit``/``--after`` walk a list page by page; JSON without them is the plain array."""
    everything = json.loads(run("nodes", "--json", env=sim.env).stdout)
    assert isinstance(everything, list) and len(everything) == 24
    names: list[str] = []
    after: list[str] = []
    while True:
        r = run("nodes", "--json", "--limit", "10", *after, env=sim.env)
        assert r.returncode == 0, r.stderr
        page = json.loads(r.stdout)
        assert page["total"] == 24 and len(page["nodes"]) <= 10
        names += [n["name"] for n in page["nodes"]]
        if page["next"] is None:
            break
        after = ["--after", page["next"]]
    assert names == sorted(n["name"] for n in everything)
    table = run("nodes", "--limit", "5", env=sim.env)
    assert table.returncode == 0 and f"5 of 24 nodes; next page: --after {names[4]}" in table.stdout
    for i in range(3):
        assert run("create", write(tmp_path, GOOD.replace("web-probe", f"probe-{i}")), env=sim.env).returncode == 0
    page = json.loads(run("list", "--json", "--limit", "2", "--after", "probe-0", env=sim.env).stdout)
    assert [s["name"] for s in page["slices"]] == ["probe-1", "probe-2"] and page["total"] == 3 and page["next"] is None
    bad = run("nodes", "--limit", "0", env=sim.env)
    assert bad.returncode == 2 and "must be between 1 and 100000" in bad.stderr
    bad = run("list", "--after", "../x", env=sim.env)
    assert bad.returncode == 2 and "not a valid slice name" in bad.stderr
