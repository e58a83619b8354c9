"""Real container slivers driven through the control plane: controller, agents, CLI paths."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ctr_helpers import PREFIX, agent_yaml

from node_agent.build import simulated_agents
from node_agent.host import AgentHost
from node_agent.netdev import bridge_name
from node_agent.simhost import teardown
from node_agent.userns import USERNS_DIR
from slices.catalogue import builtin_catalogue
from slices.client import Client, RemoteError
from slices.protocol import CreateSlice, DeleteSlice, ExecSliver, ListSlivers, ShowSlice, SliverLogs
from slices.simcluster import sim_nodes
from slices.transport import new_keypair, write_keypair
from tests.conftest import ControllerThread, wait_for

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def real_cluster(tmp_path: Path) -> Iterator[ControllerThread]:
    controller = ControllerThread(tmp_path / "c.db")
    nodes = sim_nodes(builtin_catalogue(), 2, "real")
    keys = {n["name"]: new_keypair() for n in nodes}
    controller.trust(keys)
    agents = simulated_agents(
        nodes, controller.url, server_key=controller.server_key, keys=keys, backend="real", state_dir=tmp_path / "agents", period=0.2, prefix=PREFIX + "c", first_subnet=200
    )
    host = AgentHost(agents)
    thread = threading.Thread(target=host.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: all(a.registered for a in agents), what="real agents registered")
        yield controller
    finally:
        host.stop()
        thread.join(timeout=30)
        teardown(agents)
        controller.stop()


def sliver_states(c: Client, name: str) -> list[tuple[str, str | None]]:
    return [(v.state, v.reason) for v in c.call(ShowSlice(name=name)).slivers]


def test_exec_logs_usage_and_oom_through_the_controller(real_cluster: ControllerThread) -> None:
    with real_cluster.client(timeout=30) as c:
        doc = {
            "name": "probe",
            "description": "real slivers",
            "command": ["sh", "-c", "echo hello from $(hostname); while true; do sleep 1; done"],
            "resources": {"cpu": 0.5, "memory": "64Mi", "disk": "64Mi"},
            "placement": {"count": 2, "distinct": "none"},
        }
        c.call(CreateSlice(spec=doc))
        wait_for(lambda: c.call(ShowSlice(name="probe")).state == "running", timeout=30, what="real slice running")
        shown = c.call(ShowSlice(name="probe"))
        assert {v.backend for v in shown.slivers} == {"runc"}
        # each sliver's address, reported by its agent, and the slice's peers in /etc/hosts
        shown = wait_for(lambda: (v := c.call(ShowSlice(name="probe"))) and all(s.address for s in v.slivers) and v, what="addresses in show")
        addrs = {s.id: s.address for s in shown.slivers}
        assert len(set(addrs.values())) == 2

        def hosts_name_the_peers() -> bool:
            out: list[bytes] = []
            c.call(ExecSliver(slice="probe", node=shown.slivers[0].node, argv=["cat", "/etc/hosts"], timeout=20), timeout=40, retry=False, on_output=lambda s, d: out.append(d))
            text = b"".join(out).decode()
            return all(f"{a}\t{sid}" in text for sid, a in addrs.items())

        wait_for(hosts_name_the_peers, timeout=15, what="/etc/hosts naming both slivers")

        chunks: list[tuple[str, bytes]] = []
        first = shown.slivers[0].node  # of two slivers, name one: "any of them" is refused
        r = c.call(ExecSliver(slice="probe", node=first, argv=["sh", "-c", "hostname; echo oops >&2; exit 7"], timeout=20), timeout=40, retry=False, on_output=lambda s, d: chunks.append((s, d)))
        assert r.exit_code == 7
        assert b"".join(d for s, d in chunks if s == "stdout") == b"probe\n"
        assert b"oops" in b"".join(d for s, d in chunks if s == "stderr")

        logs = wait_for(lambda: (got := c.call(SliverLogs(slice="probe", node=first))) and b"hello from probe" in got.data and got, what="output in the log")
        more = c.call(SliverLogs(slice="probe", node=logs.node, offset=logs.offset))
        assert more.data == b"" and more.offset == logs.offset

        def measured() -> bool:
            slivers = c.call(ListSlivers()).slivers
            return all(v.usage is not None and v.usage.memory > 0 and v.usage.pids >= 1 for v in slivers)

        wait_for(measured, timeout=15, what="usage from the cgroups in heartbeats")

        hog = {
            "name": "hog",
            "description": "allocates more than its memory",
            "image": "host",
            "command": ["python3", "-c", "import time; b = b'x' * (200 << 20); time.sleep(60)"],
            "resources": {"cpu": 0.5, "memory": "64Mi", "disk": "64Mi"},
            "restart": "never",  # left as it ended, so its reason stays
            "placement": {"count": 1},
        }
        c.call(CreateSlice(spec=hog))
        wait_for(lambda: sliver_states(c, "hog") == [("failed", "oom-killed")], timeout=30, what="the hog to be oom-killed")
        assert c.call(ShowSlice(name="hog")).state == "failed"
        assert c.call(ShowSlice(name="probe")).state == "running", "its neighbours are unaffected"

        with pytest.raises(RemoteError) as err:
            c.call(ExecSliver(slice="probe", argv=[]), retry=False)
        assert err.value.code == "bad-request"
        c.call(DeleteSlice(name="hog"))
        c.call(DeleteSlice(name="probe"))


def runc_pids(state_dir: Path) -> dict[str, int]:
    """Running containers by id. ``runc list`` fails when a container is removed while it
    lists (it reads the root, then each one's state): asked again then, a few times."""
    root = state_dir / "runc" / "runc"
    for _ in range(10):
        proc = subprocess.run(["runc", "--root", str(root), "list", "--format", "json"], capture_output=True, text=True)
        if proc.returncode == 0:
            return {c["id"]: c["pid"] for c in json.loads(proc.stdout or "null") or [] if c["status"] == "running"}
    raise AssertionError(f"runc list failed 10 times in a row: {proc.stderr.strip()}")


def processes_mentioning(path: Path) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if str(path).encode() in cmdline.read_bytes():
                found.append(cmdline.parent.name)
        except OSError:  # gone meanwhile
            pass
    return found


def test_agent_kill9_keeps_slivers_and_readopts_them(tmp_path: Path) -> None:
    controller = ControllerThread(tmp_path / "c.db")
    state = tmp_path / "agent"
    pair = new_keypair()
    write_keypair(state / "agent", pair)  # the operator pre-seeds the node's key ...
    controller.trust({"lab1": pair})
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(agent_yaml(controller.url, tmp_path / "keys", state, PREFIX + "k", "10.99.250.0/24", "sliver_host_access: [icmp/echo, tcp/9]\nsliver_uid_block: 99\n"))
    env = {**os.environ, "SLICEMESH_LOG_LEVEL": "warning"}

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "slices.cli", "agent", "--config", str(cfg)], cwd=ROOT, env=env)

    agent = start()
    try:
        with controller.client(timeout=30) as c:
            spec: dict[str, Any] = {"name": "stay", "description": "d", "resources": {"cpu": 0.2, "memory": "32Mi", "disk": "32Mi"}, "placement": {"count": 1}}
            wait_for(lambda: "lab1" in controller.server.cluster.registry.nodes, timeout=30, what="agent registered")
            c.call(CreateSlice(spec=spec))
            wait_for(lambda: c.call(ShowSlice(name="stay")).state == "running", timeout=30, what="running")
            before = runc_pids(state)
            assert len(before) == 1
            (init,) = before.values()
            assert int(Path(f"/proc/{init}/status").read_text().split("Uid:")[1].split()[0]) >> 24 == 99, "sliver_uid_block: 99"
            table = subprocess.run(["nft", "list", "table", "inet", bridge_name(PREFIX + "k", "lab1")], capture_output=True, text=True, check=True).stdout
            assert "ip daddr 10.99.250.1 tcp dport 9 accept" in table, "sliver_host_access reaches the node's firewall"
            agent.kill()
            agent.wait()
            assert runc_pids(state) == before, "slivers outlive the agent"
            agent = start()
            wait_for(lambda: controller.server.cluster.registry.nodes["lab1"].applied >= 1 and c.call(ShowSlice(name="stay")).state == "running", timeout=30, what="re-adopted")
            assert runc_pids(state) == before, "re-adopted, not restarted"
            c.call(DeleteSlice(name="stay"))
            wait_for(lambda: runc_pids(state) == {}, timeout=30, what="destroyed after delete")
        agent.terminate()  # a clean stop releases the warm slots, spare netns and idle supervisors
        agent.wait(timeout=30)
        assert [m for m in Path("/proc/self/mountinfo").read_text().splitlines() if str(state) in m] == []
        assert list(Path("/run/netns").glob(f"{PREFIX}k-*")) == [] and list(USERNS_DIR.glob(f"{PREFIX}k-*")) == []
        wait_for(lambda: not processes_mentioning(state), what="no process of the agent's left")
    finally:
        agent.terminate()
        agent.wait(timeout=30)
        from node_agent.backends.runc.backend import RuncBackend
        from node_agent.machine_resources import MachineResources

        machine = MachineResources(state / "node", "lab1", prefix=PREFIX + "k", subnet="10.99.250.0/24")
        leftover = RuncBackend(machine, state / "runc")
        for st in leftover.list():
            leftover.destroy(st.id)
        leftover.close()
        machine.forget()
        controller.stop()


def test_a_sliver_that_cannot_start_stays_failed_with_its_reason(real_cluster: ControllerThread) -> None:
    with real_cluster.client(timeout=30) as c:
        doc = {"name": "broken", "description": "d", "command": ["/no/such/program"], "resources": {"memory": "32Mi", "disk": "32Mi"}, "placement": {"count": 1}}
        c.call(CreateSlice(spec=doc))
        wait_for(lambda: c.call(ShowSlice(name="broken")).state == "failed", timeout=30, what="failed")
        reason = c.call(ShowSlice(name="broken")).slivers[0].reason
        assert reason and "no/such/program" in reason
        node = c.call(ShowSlice(name="broken")).slivers[0].node
        agent_period = 0.2
        # several heartbeats later it is still failed with the same reason, not "lost"
        deadline = real_cluster.server.cluster.registry.nodes[node].last_seen + 5 * agent_period
        wait_for(lambda: real_cluster.server.cluster.registry.nodes[node].last_seen > deadline, timeout=10, what="heartbeats")
        assert sliver_states(c, "broken") == [("failed", reason)]
        c.call(DeleteSlice(name="broken"))


def test_a_failing_command_is_restarted_then_moved_then_left_failed(real_cluster: ControllerThread) -> None:
    """``restart: on-failure``: a real container whose command exits 3 is restarted on its node
    (its disk keeps a count of runs), moved once its attempts are spent, and then stays failed
    with a reason that says why; a failed slice makes ``create --wait`` fail."""
    with real_cluster.client(timeout=30) as c:
        doc = {
            "name": "crashy",
            "description": "exits 3 every time",
            "command": ["sh", "-c", "echo run >> /runs; exit 3"],
            "resources": {"memory": "32Mi", "disk": "32Mi"},
            "restart": {"policy": "on-failure", "attempts": 2, "backoff": "200ms", "moves": 1},
            "placement": {"count": 1},
        }
        c.call(CreateSlice(spec=doc))
        first = c.call(ShowSlice(name="crashy")).slivers[0]
        wait_for(lambda: c.call(ShowSlice(name="crashy")).state == "failed", timeout=60, what="failed for good")
        v = c.call(ShowSlice(name="crashy")).slivers[0]
        assert v.id == first.id and v.node != first.node and v.moves == 1, "moved once, keeping its id"
        assert v.restarts == 2 and v.reason == "gave up after 2 restarts: exited with code 3"
        kinds = [e.event for e in v.history]
        assert kinds.count("failed") >= 2 and "moved" in kinds, kinds
        runs = real_cluster.server.cluster.registry.nodes
        assert all(n.used.memory == 0 for n in runs.values()), "a sliver failed for good holds nothing"
        c.call(DeleteSlice(name="crashy"))


def test_a_clean_exit_is_exited_not_restarted_and_frees_its_share(real_cluster: ControllerThread) -> None:
    with real_cluster.client(timeout=30) as c:
        doc = {"name": "oneshot", "description": "does its job once", "command": ["sh", "-c", "echo done"], "resources": {"memory": "32Mi", "disk": "32Mi"}, "placement": {"count": 1}}
        c.call(CreateSlice(spec=doc))
        wait_for(lambda: c.call(ShowSlice(name="oneshot")).state == "exited", timeout=30, what="exited")
        v = c.call(ShowSlice(name="oneshot")).slivers[0]
        assert (v.state, v.reason, v.restarts) == ("exited", "exited with code 0", 0)
        assert real_cluster.server.cluster.registry.nodes[v.node].used.memory == 0
        logs = c.call(SliverLogs(slice="oneshot"))
        assert logs.data.count(b"done") == 1, "ran once: a clean exit is not restarted"
        c.call(DeleteSlice(name="oneshot"))
