"""``kill -9`` of an agent in the middle of making and of removing a sliver (the named points
``agent.create.mid`` and ``agent.destroy.mid``), on the sim backend, on real runc containers
and on real QEMU guests: the restarted agent re-adopts what is there, converges to the
controller's desired set, and leaks nothing (runc containers, QEMU processes, processes,
mounts, loop devices, netns, user namespaces, links (veths, TAPs), cgroups, sliver
directories).
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from node_agent.userns import USERNS_DIR
from slices.catalogue import builtin_catalogue
from slices.protocol import CreateSlice, DeleteSlice, ListNodes, ShowSlice
from slices.simcluster import sim_nodes
from slices.transport import new_keypair, write_keypair
from tests.conftest import ControllerThread, wait_for
from tests.integration.realhost import new_prefix, sweep, why_not
from tests.resilience.procs import ROOT, converged, sim_holdings, spec

pytestmark = pytest.mark.timeout(120)


def died_at(proc: subprocess.Popen[bytes], log: Path, point: str) -> None:
    proc.wait(timeout=30)
    assert proc.returncode == -9 and f"fault {point}: SIGKILL" in log.read_text(errors="replace"), log.read_text(errors="replace")[-2000:]


# ---- sim backend: agents in their own process ------------------------------------------------


def sim_agents(c: ControllerThread, nodes: list[dict[str, Any]], state: Path, keys: dict[str, Any], faults: str = "") -> tuple[subprocess.Popen[bytes], Path]:
    state.mkdir(parents=True, exist_ok=True)
    (state / "nodes.json").write_text(json.dumps(nodes))
    keyfile = state / "keys.json"
    keyfile.write_text(json.dumps({"server": c.server_key, "agents": {n: [k.public, k.secret] for n, k in keys.items()}}))
    keyfile.chmod(0o600)
    log = state / f"agents-{len(list(state.glob('agents-*.log')))}.log"
    args = ["-m", "node_agent.simhost", "--controller", c.url, "--nodes", str(state / "nodes.json"), "--keys", str(keyfile), "--state-dir", str(state / "agents"), "--heartbeat-period", "0.2"]
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, env={**os.environ, "SLICEMESH_FAULTS": faults}, stdout=out, stderr=subprocess.STDOUT)
    return proc, log


@pytest.mark.parametrize("point", ["agent.create.mid", "agent.destroy.mid"])
def test_sim_agent_killed(point: str, tmp_path: Path) -> None:
    c = ControllerThread(tmp_path / "c.db")
    nodes = sim_nodes(builtin_catalogue(), 4, "sim")
    keys = {n["name"]: new_keypair() for n in nodes}
    c.trust(keys)
    creating = point == "agent.create.mid"
    proc, log = sim_agents(c, nodes, tmp_path, keys, faults=point if creating else "")
    try:
        with c.client() as cl:
            wait_for(lambda: sum(n.state == "up" for n in cl.call(ListNodes()).nodes) == 4, timeout=30, what="4 nodes up")
            cl.call(CreateSlice(spec=spec("stays", 2)))
            cl.call(CreateSlice(spec=spec("goes", 2)))
            if not creating:
                converged(cl, lambda: sim_holdings(tmp_path / "agents"), c.server.store.path)
                proc.terminate()
                proc.wait(timeout=15)
                proc, log = sim_agents(c, nodes, tmp_path, keys, faults=point)
                wait_for(lambda: sum(n.state == "up" for n in cl.call(ListNodes()).nodes) == 4, timeout=30, what="4 nodes up again")
                cl.call(DeleteSlice(name="goes"))
            died_at(proc, log, point)
            proc, log = sim_agents(c, nodes, tmp_path, keys)
            if creating:
                converged(cl, lambda: sim_holdings(tmp_path / "agents"), c.server.store.path)
                cl.call(DeleteSlice(name="goes"))
            converged(cl, lambda: sim_holdings(tmp_path / "agents"), c.server.store.path)
            assert cl.call(ShowSlice(name="stays")).state == "running"
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        c.stop()


# ---- runc backend: a real agent process -----------------------------------------------------

REASON = why_not("runc/runc", "mkfs.ext4/e2fsprogs")


def leaks(state: Path, prefix: str, node: str) -> dict[str, list[str]]:
    """What the agent's node still holds once its agent stopped cleanly with nothing desired."""
    mounts = [m for m in Path("/proc/self/mountinfo").read_text().splitlines() if str(state) in m]
    loops = [x for x in subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout.splitlines() if str(state) in x]
    veth = re.compile(rf"^{re.escape(prefix[:5])}[0-9a-f]{{9}}$")
    links = [ln.split(":")[1].strip().split("@")[0] for ln in subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout.splitlines()]
    procs, qemu = [], []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes()
        except OSError:
            continue
        if str(state).encode() in argv:
            procs.append(cmdline.parent.name)
            if b"qemu-system" in argv:
                qemu.append(cmdline.parent.name)
    root = state / "runc" / "runc"
    listed = subprocess.run(["runc", "--root", str(root), "list", "-q"], capture_output=True, text=True).stdout.split() if root.exists() else []
    cgroups = [str(p) for p in Path("/sys/fs/cgroup").glob(f"*/{prefix}/{node}/*") if p.is_dir()]
    return {
        "mounts": mounts,
        "loops": loops,
        "links": [x for x in links if veth.match(x)],
        "netns": [p.name for p in Path("/run/netns").glob(f"{prefix}-*")] if Path("/run/netns").exists() else [],
        "userns": [p.name for p in USERNS_DIR.glob(f"{prefix}-*")],
        "processes": procs,
        "runc": listed,
        "qemu": qemu,
        "vm dirs": [p.name for p in (state / "qemu" / "slivers").glob("*")] if (state / "qemu" / "slivers").exists() else [],
        "cgroups": cgroups,
    }


def _vm_reason() -> str | None:
    from tests.integration.vm.vm_helpers import why_not as vm_why_not

    return REASON or vm_why_not()


VM_REASON = _vm_reason()
#: What each real backend is asked for: a container, or a VM (a TCG boot: seconds of CPU).
SLIVERS = {"runc": {"cpu": 0.2, "memory": "32Mi", "disk": "32Mi"}, "qemu": {"isolation": "vm", "cpu": 0.5, "memory": "128Mi", "disk": "64Mi"}}
BOOT = {"runc": 30.0, "qemu": 240.0}  # a TCG boot on a busy 2-core host, through heartbeats


@pytest.mark.root
@pytest.mark.skipif(REASON is not None, reason=REASON or "")
@pytest.mark.parametrize("point", ["agent.create.mid", "agent.destroy.mid"])
def test_runc_agent_killed(point: str, tmp_path: Path) -> None:
    agent_killed("runc", point, tmp_path)


@pytest.mark.root
@pytest.mark.timeout(600)
@pytest.mark.skipif(VM_REASON is not None, reason=VM_REASON or "")
@pytest.mark.parametrize("point", ["agent.create.mid", "agent.destroy.mid"])
def test_qemu_agent_killed(point: str, tmp_path: Path) -> None:
    """The same for a VM sliver: a guest on record with its disk but never booted, or one
    whose QEMU and cgroup are gone but whose TAP, run directory and disk are left."""
    agent_killed("qemu", point, tmp_path)


def agent_killed(backend: str, point: str, tmp_path: Path) -> None:
    prefix = new_prefix("k")
    controller = ControllerThread(tmp_path / "c.db")
    state = tmp_path / "agent"
    pair = new_keypair()
    write_keypair(state / "agent", pair)
    controller.trust({"lab1": pair})
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(
        f"controller: {controller.url}\ncontroller_key: {tmp_path / 'keys' / 'controller.key'}\nname: lab1\nsite: lab\n"
        "location: {city: Princeton, country: US, region: north-america, lat: 40.34, lon: -74.65}\n"
        "capacity: {cpu: 2, memory: 2Gi, disk: 20Gi}\nreserve: {cpu: 0.5, memory: 256Mi, disk: 1Gi}\n"
        f"state_dir: {state}\ncgroup_prefix: {prefix}\nsubnet: 10.98.{random.randrange(1, 250)}.0/24\nheartbeat_period: 0.2\n"
        + ("backends: {container: runc, vm: qemu}\nqemu: {accelerator: tcg}\n" if backend == "qemu" else "backends: {container: runc}\n")
    )
    logs: list[Path] = []

    def start(faults: str = "") -> subprocess.Popen[bytes]:
        logs.append(tmp_path / f"agent-{len(logs)}.log")
        with open(logs[-1], "wb") as out:
            return subprocess.Popen([sys.executable, "-m", "slices.cli", "agent", "--config", str(cfg)], cwd=ROOT, env={**os.environ, "SLICEMESH_LOG_LEVEL": "warning", "SLICEMESH_FAULTS": faults}, stdout=out, stderr=subprocess.STDOUT)

    creating = point == "agent.create.mid"
    resources = dict(SLIVERS[backend])
    doc = {"name": "real", "description": "d", "isolation": resources.pop("isolation", "container"), "resources": resources, "placement": {"count": 1}}
    agent = start(point if creating else "")
    try:
        with controller.client(timeout=30) as c:
            wait_for(lambda: "lab1" in controller.server.cluster.registry.nodes, timeout=30, what="agent registered")
            c.call(CreateSlice(spec=doc))
            if not creating:
                wait_for(lambda: c.call(ShowSlice(name="real")).state == "running", timeout=BOOT[backend], what="running")
                agent.terminate()
                agent.wait(timeout=30)
                agent = start(point)
                wait_for(lambda: controller.server.cluster.registry.nodes["lab1"].state == "up", timeout=30, what="agent back")
                c.call(DeleteSlice(name="real"))
            died_at(agent, logs[-1], point)
            agent = start()
            if creating:
                wait_for(lambda: c.call(ShowSlice(name="real")).state == "running", timeout=BOOT[backend] * 2, what="created after the restart")
                c.call(DeleteSlice(name="real"))
            wait_for(lambda: not controller.server.cluster.registry.nodes["lab1"].slivers, what="nothing desired")
            rec = controller.server.cluster.registry.nodes["lab1"]
            wait_for(lambda: rec.applied >= rec.generation and not (left := leaks(state, prefix, "lab1"))["runc"] and not left["qemu"], timeout=30, what="the sliver destroyed")
        agent.terminate()  # a clean stop releases warm slots, spare netns and idle supervisors
        agent.wait(timeout=30)
        left = leaks(state, prefix, "lab1")
        assert {k: v for k, v in left.items() if v} == {}, f"leaked after a kill at {point}"
    finally:
        if agent.poll() is None:
            agent.terminate()
            agent.wait(timeout=30)
        from node_agent.backends.qemu.backend import QemuBackend
        from node_agent.backends.qemu.settings import QemuSettings
        from node_agent.backends.runc.backend import RuncBackend
        from node_agent.machine_resources import MachineResources

        machine = MachineResources(state / "node", "lab1", prefix=prefix)
        for leftover in (RuncBackend(machine, state / "runc"), *([QemuBackend(machine, state / "qemu", QemuSettings(accelerator="tcg"))] if backend == "qemu" else [])):
            for st in leftover.list():
                leftover.destroy(st.id)
            leftover.close()
        machine.forget()
        sweep(state, prefix)
        controller.stop()
