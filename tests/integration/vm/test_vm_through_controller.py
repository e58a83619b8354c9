"""A VM slice driven through the control plane, as users drive it: a controller, a real agent
process offering containers and VMs (``slicemesh agent``, killed with SIGKILL half-way) and
simulated nodes that offer containers only.

One VM is booted and shared by every assertion (a TCG boot costs seconds of CPU): where it
lands, its output, exec, what the guest sees, a container neighbour on the same node, the
agent's death and return, its command's exit and the restart policy, and what delete leaves
behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from vm_helpers import PREFIX, MiB

from node_agent import cgroups
from node_agent.backends.qemu import launcher
from node_agent.machine_resources import sliver_key
from node_agent.netdev import tap_name
from slices import render
from slices.catalogue import builtin_catalogue
from slices.client import Client, RemoteError
from slices.protocol import CreateSlice, DeleteSlice, ExecSliver, ListNodes, PlanSlice, ShowSlice, SliverLogs
from slices.simcluster import sim_nodes
from slices.transport import new_keypair, write_keypair
from slices.wire import to_wire
from tests.conftest import AgentsThread, ControllerThread, wait_for

pytestmark = pytest.mark.timeout(600)
ROOT = Path(__file__).resolve().parents[3]
BOOT = 240.0  # a TCG boot under a busy 2-core host, through heartbeats
NODE = "lab1"
VM_COMMAND = "echo hello from $(hostname); while [ ! -e /tmp/done ]; do sleep 0.2; done; echo bye; exit 3"


class Lab:
    """The controller, the real agent process (restartable) and the container-only nodes."""

    def __init__(self, tmp: Path) -> None:
        self.controller = ControllerThread(tmp / "c.db")
        self.state = (tmp / "state").resolve()
        self.prefix = PREFIX + "c"
        pair = new_keypair()
        write_keypair(self.state / "agent", pair)
        self.controller.trust({NODE: pair})
        self.cfg = tmp / f"{NODE}.yaml"  # not under the state dir: processes are found by that path
        self.cfg.write_text(
            f"controller: {self.controller.url}\ncontroller_key: {json.dumps(self.controller.server_key)}\nname: {NODE}\nsite: lab\n"  # Z85 may begin with YAML syntax
            "location: {city: Princeton, country: US, region: north-america, lat: 40.34, lon: -74.65}\n"
            "capacity: {cpu: 2, memory: 2Gi, disk: 20Gi}\nreserve: {cpu: 0.5, memory: 256Mi, disk: 1Gi}\n"
            f"backends: {{container: runc, vm: qemu}}\nstate_dir: {self.state}\ncgroup_prefix: {self.prefix}\nheartbeat_period: 0.2\n"
            "runc: {warm_slots: 0}\nqemu: {accelerator: tcg}\n"
        )
        self.agent: subprocess.Popen[bytes] | None = None
        others = sim_nodes(builtin_catalogue(), 2, "sim")
        self.others = AgentsThread(self.controller, [{**n, "offers": {"container": "sim"}} for n in others], state_dir=None)

    def start_agent(self) -> None:
        env = {**os.environ, "SLICEMESH_LOG_LEVEL": "warning"}
        self.agent = subprocess.Popen([sys.executable, "-m", "slices.cli", "agent", "--config", str(self.cfg)], cwd=ROOT, env=env)

    def stop_agent(self, kill: bool = False) -> None:
        if self.agent is not None:
            self.agent.kill() if kill else self.agent.terminate()
            self.agent.wait(timeout=60)

    def qemu_pids(self) -> list[int]:
        return [pid for pid, cmd in processes(self.state) if b"qemu-system" in cmd]

    def close(self) -> None:
        self.stop_agent()
        from node_agent.backends.qemu.backend import QemuBackend
        from node_agent.backends.qemu.settings import QemuSettings
        from node_agent.backends.runc.backend import RuncBackend
        from node_agent.backends.runc.settings import RuncSettings
        from node_agent.machine_resources import MachineResources

        machine = MachineResources(self.state / "node", NODE, prefix=self.prefix)
        for b in (QemuBackend(machine, self.state / "qemu", QemuSettings(accelerator="tcg")), RuncBackend(machine, self.state / "runc", RuncSettings(warm_slots=0))):
            for st in b.list():
                b.destroy(st.id)
            b.close()
        machine.forget()
        self.others.stop()
        self.controller.stop()


def processes(path: Path) -> list[tuple[int, bytes]]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            cmd = cmdline.read_bytes()
        except OSError:  # gone meanwhile
            continue
        if str(path).encode() in cmd:
            found.append((int(cmdline.parent.name), cmd))
    return found


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    lab = Lab(tmp_path)
    try:
        lab.start_agent()
        yield lab
    finally:
        lab.close()


def run(c: Client, slice_name: str, script: str, timeout: float = 60.0) -> tuple[int, str, str]:
    out: dict[str, bytes] = {"stdout": b"", "stderr": b""}

    def collect(stream: str, data: bytes) -> None:
        out[stream] += data

    r = c.call(ExecSliver(slice=slice_name, argv=["sh", "-c", script], timeout=timeout), timeout=timeout + 30, retry=False, on_output=collect)
    return r.exit_code, out["stdout"].decode(errors="replace"), out["stderr"].decode(errors="replace")


def sliver(c: Client, name: str) -> Any:
    slivers = c.call(ShowSlice(name=name)).slivers
    assert len(slivers) == 1
    return slivers[0]


def test_a_vm_slice_through_the_controller(lab: Lab) -> None:
    c = lab.controller.client(timeout=60)
    with c:
        wait_for(lambda: sum(n.state == "up" for n in c.call(ListNodes()).nodes) == 3, timeout=60, what="the real agent and two container-only nodes")
        nodes = {n.name: n for n in c.call(ListNodes()).nodes}
        facts = nodes[NODE].facts
        assert facts["vm.accelerator"].startswith("tcg (") and facts["overhead.vm.memory"] == str(96 * MiB)
        facts = next(line.strip() for line in render.nodes_text(to_wire(list(nodes.values()))).splitlines() if line.strip().startswith(f"{NODE}: "))
        assert "overhead.vm.memory 96Mi" in facts and "vm.accelerator tcg" in facts

        # only a node offering vm can hold a VM, though the others have more room
        vm_doc: dict[str, Any] = {
            "name": "vmtest", "description": "a VM through the controller", "isolation": "vm", "command": ["sh", "-c", VM_COMMAND],
            "resources": {"cpu": 1.25, "memory": "128Mi", "disk": "64Mi"}, "placement": {"count": 1},
            "restart": {"policy": "on-failure", "attempts": 1, "backoff": "0.1s", "moves": 0},
            "network": {"open_to_slices": True},  # the container neighbour below is another slice: both open
        }  # fmt: skip
        with pytest.raises(RemoteError, match="2 offer no vm isolation"):
            c.call(PlanSlice(spec={**vm_doc, "placement": {"count": 2}}))
        assert {r.node for r in c.call(PlanSlice(spec=vm_doc)).slivers} == {NODE}
        c.call(CreateSlice(spec=vm_doc))
        wait_for(lambda: sliver(c, "vmtest").state == "running", timeout=BOOT, what="the VM running")
        v = sliver(c, "vmtest")
        assert (v.node, v.backend) == (NODE, "qemu")
        lab1 = next(n for n in c.call(ListNodes()).nodes if n.name == NODE)
        assert lab1.allocated.memory == 128 * MiB + 96 * MiB, "the node is charged the VM's RAM and QEMU's overhead (its fact)"

        logs = wait_for(lambda: (got := c.call(SliverLogs(slice="vmtest"))) and b"hello from vmtest" in got.data and got, timeout=30, what="the VM's output")
        assert c.call(SliverLogs(slice="vmtest", node=NODE, offset=logs.offset)).data == b""

        assert run(c, "vmtest", "echo out; echo err >&2; exit 7") == (7, "out\n", "err\n")
        code, out, _ = run(c, "vmtest", "awk '/MemTotal/ {print $2}' /proc/meminfo; nproc")
        mem_kib, cpus = out.split()
        assert code == 0 and (128 - 48) * 1024 < int(mem_kib) <= 128 * 1024 and cpus == "2"  # RAM less the kernel's own; ceil(1.25)

        # a container on the same node: another address from the same pool, reachable both ways
        ctr_doc = {"name": "ctrtest", "description": "a neighbour", "command": ["sleep", "100000"], "resources": {"memory": "32Mi", "disk": "32Mi"}, "placement": {"locations": [{"site": "lab"}]}, "network": {"open_to_slices": True}}
        c.call(CreateSlice(spec=ctr_doc))
        wait_for(lambda: sliver(c, "ctrtest").state == "running", timeout=60, what="the container running")
        assert sliver(c, "ctrtest").node == NODE
        vm_addr = run(c, "vmtest", "ip -4 -o addr show eth0")[1].split()[3].split("/")[0]
        ctr_addr = run(c, "ctrtest", "ip -4 -o addr show eth0")[1].split()[3].split("/")[0]
        assert vm_addr != ctr_addr
        assert run(c, "vmtest", f"ping -c 1 -W 5 {ctr_addr}")[0] == 0
        assert run(c, "vmtest", "nc -l -p 7002 -e echo hi-from-vm </dev/null >/dev/null 2>&1 &")[0] == 0
        assert wait_for(lambda: "hi-from-vm" in run(c, "ctrtest", f"nc -w 5 {vm_addr} 7002 </dev/null")[1], timeout=30, what="the container reaching the VM")

        # the agent dies; the VM does not, and the new agent takes it back as it is
        before = lab.qemu_pids()
        assert len(before) == 1
        registry = lab.controller.server.cluster.registry
        lab.stop_agent(kill=True)
        assert lab.qemu_pids() == before, "a VM outlives its agent"
        restarted = time.time()
        lab.start_agent()

        def readopted() -> bool:  # heard from the new agent (the old one is dead), which applied the desired set
            rec = registry.nodes[NODE]
            return rec.last_seen > restarted and rec.state == "up" and rec.applied >= rec.generation and sliver(c, "vmtest").state == "running"

        wait_for(readopted, timeout=60, what="the new agent registered and the VM re-adopted")
        assert lab.qemu_pids() == before, "re-adopted, not rebooted"
        assert run(c, "vmtest", "echo again") == (0, "again\n", "")

        # the command ends with code 3: failed, so the node restarts the VM by its policy (the
        # same disk: /tmp/done is still there and the command ends at once), then gives up
        run(c, "vmtest", "touch /tmp/done")
        wait_for(lambda: sliver(c, "vmtest").restarts == 1, timeout=60, what="the failed VM restarted")
        ended = wait_for(lambda: (v := sliver(c, "vmtest")).state == "failed" and v.restarts == 1 and v, timeout=BOOT, what="the restarted VM failed again")
        assert ended.reason == "gave up after 1 restarts: exited with code 3"
        assert c.call(SliverLogs(slice="vmtest")).data.count(b"bye") == 2  # one console log across both boots
        assert sliver(c, "ctrtest").state == "running"

        key = sliver_key(v.id)
        c.call(DeleteSlice(name="vmtest"))
        c.call(DeleteSlice(name="ctrtest"))
        wait_for(lambda: not lab.qemu_pids() and not list((lab.state / "qemu" / "slivers").iterdir()), timeout=60, what="the VM destroyed")
        wait_for(lambda: not list((lab.state / "runc" / "slivers").iterdir()), timeout=60, what="the container destroyed")
        assert not (Path("/sys/class/net") / tap_name(lab.prefix, NODE, key)).exists()
        assert not launcher.RunPaths.for_sliver(lab.state / "qemu" / "slivers" / key).run.exists()
        leaves = [d for mnt in cgroups.hierarchies() for d in (mnt / lab.prefix / NODE).glob("*") if d.is_dir()]
        assert leaves == []
        assert json.loads((lab.state / "node" / "addresses.json").read_text())["slivers"] == {}
        lab.stop_agent()
        assert processes(lab.state) == []
