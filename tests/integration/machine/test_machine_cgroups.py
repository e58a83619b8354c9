"""A cgroup leaf for a process runc does not manage (a VM's QEMU): made in every hierarchy under
the node cap, limited by the same formula as a container, joined, read, killed and removed."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from node_agent import cgroups
from node_agent.cgroup_limits import Limits, cpu_quota
from node_agent.machine_resources import MachineResources
from tests.conftest import wait_for

pytestmark = pytest.mark.timeout(60)
MiB = 1 << 20
BUSY = "while True: pass"


def held(machine: MachineResources, key: str, code: str, argv: tuple[str, ...] = ()) -> subprocess.Popen[bytes]:
    """``python -c code`` (or ``argv``), moved into leaf ``key`` before it starts (it waits on stdin)."""
    argv = argv or (sys.executable, "-c", code)
    proc = subprocess.Popen(["sh", "-c", 'read go; exec "$@"', "sh", *argv], stdin=subprocess.PIPE)
    machine.cg.join(key, proc.pid)
    assert proc.stdin is not None
    proc.stdin.write(b"go\n")
    proc.stdin.close()
    return proc


@pytest.fixture
def procs(machine: MachineResources) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test started; after it, every leaf's processes (their children too) are killed."""
    made: list[subprocess.Popen[bytes]] = []
    yield made
    for key in ("vm1", "busy", "hog", "forky", "gone"):
        machine.cg.remove_leaf(key)
    for p in made:
        p.kill()
        p.wait()


def leaf_dirs(machine: MachineResources, key: str) -> list[Path]:
    return [mnt / machine.cg.leaf(key) for mnt in (cgroups.hierarchies() if machine.cg.layout != "v2" else [cgroups.ROOT])]


def test_leaf_in_every_hierarchy_with_the_container_formula(machine: MachineResources, procs: list[subprocess.Popen[bytes]]) -> None:
    machine.cg.create_leaf("vm1", machine.limits(0.5, 64 * MiB, 40))
    assert all(d.is_dir() for d in leaf_dirs(machine, "vm1"))
    if machine.cg.layout != "v2":
        mounts = cgroups.v1_mounts()
        cpu, mem, pids = (mounts[c] / machine.cg.leaf("vm1") for c in ("cpu", "memory", "pids"))
        assert (cpu / "cpu.cfs_quota_us").read_text().strip() == str(cpu_quota(0.5))
        assert (cpu / "cpu.shares").read_text().strip() == "512"
        assert int((mem / "memory.limit_in_bytes").read_text()) == 64 * MiB
        if machine.swap_accounting:
            assert int((mem / "memory.memsw.limit_in_bytes").read_text()) == 64 * MiB
        assert (pids / "pids.max").read_text().strip() == "40"
        node_cpu = mounts["cpu"] / machine.cg.rel
        assert (node_cpu / "cpu.cfs_quota_us").read_text().strip() == str(cpu_quota(2.0)), "the node cap, same formula"
    p = held(machine, "vm1", "import time; time.sleep(60)")
    procs.append(p)
    assert p.pid in machine.cg.pids("vm1")
    lines = Path(f"/proc/{p.pid}/cgroup").read_text().splitlines()
    assert lines and all(line.endswith("/" + machine.cg.leaf("vm1")) for line in lines), lines
    machine.cg.create_leaf("vm1", machine.limits(0.5, 64 * MiB, 40))  # idempotent: its process stays
    assert p.pid in machine.cg.pids("vm1")


def test_cpu_quota_holds(machine: MachineResources, procs: list[subprocess.Popen[bytes]]) -> None:
    machine.cg.create_leaf("busy", Limits(0.3, 64 * MiB, 40, machine.swap_accounting))
    procs.append(held(machine, "busy", BUSY))
    wait_for(lambda: (u := machine.cg.usage("busy")) is not None and u.cpu_seconds > 0.05, what="busy loop")
    u0, t0 = machine.cg.usage("busy"), time.monotonic()
    time.sleep(1.5)  # the measurement window itself
    u1 = machine.cg.usage("busy")
    assert u0 is not None and u1 is not None
    cores = (u1.cpu_seconds - u0.cpu_seconds) / (time.monotonic() - t0)
    assert cores <= 0.36, cores  # a quota is an upper bound whatever else the host runs


def test_memory_hog_is_oom_killed_and_pids_are_capped(machine: MachineResources, procs: list[subprocess.Popen[bytes]]) -> None:
    machine.cg.create_leaf("hog", Limits(1.0, 64 * MiB, 20, machine.swap_accounting))
    hog = held(machine, "hog", "b = b'x' * (200 << 20)")
    procs.append(hog)
    assert hog.wait(timeout=30) == -9
    usage = machine.cg.usage("hog")
    assert usage is not None and usage.oom_kills == 1
    machine.cg.create_leaf("forky", Limits(1.0, 64 * MiB, 20, machine.swap_accounting))
    forky = held(machine, "forky", "", ("sh", "-c", "for i in $(seq 60); do sleep 30 & done 2>/dev/null; wait"))
    procs.append(forky)
    events = (cgroups.v1_mounts()["pids"] if machine.cg.layout != "v2" else cgroups.ROOT) / machine.cg.leaf("forky") / "pids.events"
    wait_for(lambda: int(events.read_text().split()[1]) > 0, what="the kernel to refuse a fork")
    assert machine.cg.usage("forky").pids == 20  # type: ignore[union-attr]


def test_remove_leaf_kills_what_runs_and_leaves_nothing(machine: MachineResources, procs: list[subprocess.Popen[bytes]]) -> None:
    machine.cg.create_leaf("gone", machine.limits(0.5, 64 * MiB, 40))
    p = held(machine, "gone", "import time; time.sleep(60)")
    procs.append(p)
    machine.cg.remove_leaf("gone")
    assert p.wait(timeout=10) == -9
    assert not any(d.exists() for d in leaf_dirs(machine, "gone"))
    machine.cg.remove_leaf("gone")  # a no-op once gone


@pytest.mark.parametrize("lim", [Limits(0, 64 * MiB, 10), Limits(1, 64 * MiB, 0), Limits(1, 4096, 10)])
def test_impossible_limits_make_nothing(machine: MachineResources, lim: Limits) -> None:
    with pytest.raises(cgroups.CgroupError):
        machine.cg.create_leaf("bad", lim)
    assert not any(d.exists() for d in leaf_dirs(machine, "bad"))
    with pytest.raises(cgroups.CgroupError, match="create_leaf first"):
        machine.cg.join("bad", os.getpid())
