"""A real agent whose ``desired.json`` and slivers' ``meta.json`` were cut short while it was
down: it names each file, recovers from the controller's desired set, and leaks nothing (a
sliver deleted meanwhile is found and removed by name, without its record)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from ctr_helpers import PREFIX, agent_yaml

from slices.protocol import CreateSlice, DeleteSlice, ShowSlice
from slices.transport import new_keypair, write_keypair
from tests.conftest import ControllerThread, wait_for
from tests.integration.container.test_through_controller import processes_mentioning, runc_pids
from tests.integration.realhost import sweep

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).resolve().parents[3]
NODE_PREFIX = PREFIX + "m"


def leftovers(state: Path, keys: list[str]) -> list[str]:
    """What of the slivers ``keys`` or the agent's disks is still on this host."""
    found = [f"mount {m.split()[4]}" for m in Path("/proc/self/mountinfo").read_text().splitlines() if str(state) in m]
    found += [f"loop {line}" for line in subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout.splitlines() if str(state) in line]
    found += [f"netns {p}" for p in Path("/run/netns").glob(f"{NODE_PREFIX}-*") if any(k in p.name for k in keys)]
    for ctl in ("memory", "pids", "cpu"):
        found += [f"cgroup {p}" for k in keys for p in Path("/sys/fs/cgroup", ctl).glob(f"{NODE_PREFIX}*/**/{k}")]
    found += [f"container {k}" for k in runc_pids(state)]
    return found


def test_truncated_desired_and_meta_files_are_named_and_recovered(tmp_path: Path) -> None:
    controller = ControllerThread(tmp_path / "c.db")
    state = tmp_path / "agent"
    pair = new_keypair()
    write_keypair(state / "agent", pair)
    controller.trust({"lab1": pair})
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(agent_yaml(controller.url, tmp_path / "keys", state, NODE_PREFIX, f"10.98.{20 + os.getpid() % 200}.0/24"))
    log = tmp_path / "agent.log"

    def start() -> subprocess.Popen[bytes]:
        with open(log, "ab") as f:
            return subprocess.Popen([sys.executable, "-m", "slices.cli", "agent", "--config", str(cfg)], cwd=ROOT, stderr=f, env={**os.environ, "SLICEMESH_LOG_LEVEL": "warning"})

    agent = start()
    try:
        with controller.client(timeout=30) as c:
            wait_for(lambda: "lab1" in controller.server.cluster.registry.nodes, timeout=30, what="agent registered")
            spec: dict[str, Any] = {"description": "d", "resources": {"cpu": 0.2, "memory": "32Mi", "disk": "32Mi"}, "placement": {"count": 1}}
            for name in ("stays", "goes"):
                c.call(CreateSlice(spec={**spec, "name": name}))
            wait_for(lambda: all(c.call(ShowSlice(name=n)).state == "running" for n in ("stays", "goes")), timeout=40, what="both running")
            before = runc_pids(state)
            keys = sorted(before)
            assert len(keys) == 2
            (stays,) = (k for k in keys if k.startswith("stays-"))
            agent.kill()
            agent.wait()
            desired = state / "desired.json"
            metas = sorted((state / "runc" / "slivers").glob("*/meta.json"))
            assert len(metas) == 2
            for path in [desired, *metas]:  # cut short, as a full disk or a crash of the filesystem leaves them
                data = path.read_bytes()
                path.write_bytes(data[: len(data) // 2])
            c.call(DeleteSlice(name="goes"))  # while the node is away: nobody will name this sliver to it again
            agent = start()
            # Both records unreadable: the agent removes both containers by name at start-up
            # (one at a time: a single container left is not yet recovery), then the
            # controller's desired set starts "stays" again, as a new process.
            def recovered() -> bool:
                now = runc_pids(state)
                return list(now) == [stays] and now[stays] != before[stays] and c.call(ShowSlice(name="stays")).state == "running"

            wait_for(recovered, timeout=40, what="recovered")
            text = log.read_text()
            for path in [desired, *metas]:
                assert f"{path} is unreadable" in text, f"the log names {path}:\n{text}"
            assert "File exists" not in text
            c.call(DeleteSlice(name="stays"))
            wait_for(lambda: runc_pids(state) == {}, timeout=30, what="destroyed after delete")
        agent.terminate()
        agent.wait(timeout=30)
        assert leftovers(state, keys) == []
        wait_for(lambda: not processes_mentioning(state), what="no process of the agent's left")
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait(timeout=30)
        controller.stop()
        sweep(tmp_path, NODE_PREFIX)
