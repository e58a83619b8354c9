"""A backend killed with SIGKILL leaves its slivers running; a new one over the same state adopts them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
from ctr_helpers import PREFIX

from node_agent.backends.runc.backend import RuncBackend

pytestmark = pytest.mark.timeout(60)

AGENT = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from node_agent.backends.runc.backend import RuncBackend
    from node_agent.machine_resources import MachineResources
    from slices.model import Resources, SliverSpec
    state, images, prefix = sys.argv[1:4]
    m = MachineResources(Path(state) / "node", "n1", prefix=prefix, capacity_cpu=2.0, capacity_memory=2 << 30, images_dir=Path(images))
    b = RuncBackend(m, Path(state) / "runc")
    pids = {}
    for sid in ("keep1", "keep2"):
        b.create(SliverSpec(id=sid, slice="s-" + sid, isolation="container", image="busybox",
                            resources=Resources(cpu=0.2, memory=32 << 20, disk=32 << 20), command=("sh", "-c", "echo started; sleep 1000")))
        pids[sid] = b.pid(sid)
    print(json.dumps(pids), flush=True)
    time.sleep(1000)
    """
)


def test_slivers_survive_agent_kill_and_are_readopted(make_backend, images_dir) -> None:  # type: ignore[no-untyped-def]
    first: RuncBackend = make_backend(warm_slots=0)  # owns clean-up; its state dir is the one the agent uses
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    agent = subprocess.Popen(
        [sys.executable, "-c", AGENT, str(first.state_dir.parent), str(images_dir), PREFIX],
        stdout=subprocess.PIPE, cwd=os.path.dirname(root), text=True,
    )  # fmt: skip
    try:
        assert agent.stdout is not None
        pids = json.loads(agent.stdout.readline())
    finally:
        agent.send_signal(signal.SIGKILL)
        agent.wait(timeout=10)
    assert all(pids.values())
    again: RuncBackend = make_backend()
    listed = {s.id: s.state for s in again.list()}
    assert listed == {"keep1": "running", "keep2": "running"}
    assert {sid: again.pid(sid) for sid in pids} == pids
    assert again.logs("keep1", None, 100)[0] == b"started\n"
    address = again.machine.addresses.get("keep1")
    assert address and again.net.address_of("keep1") == address, "the pool, read back from disk, agrees with the kernel"
