"""CPU, memory and pids limits hold for real, by the cgroup's own accounting."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from ctr_helpers import MiB, spec

from node_agent import cgroups
from node_agent.backends.runc.backend import RuncBackend
from node_agent.machine_resources import sliver_key
from tests.conftest import wait_for

pytestmark = pytest.mark.timeout(60)
BUSY = ("sh", "-c", "while :; do :; done")


def host_busy_seconds() -> float:
    """CPU seconds the whole host spent not idle, from /proc/stat."""
    with open("/proc/stat", encoding="ascii") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def test_cpu_quotas_hold_for_busy_slivers(backend: RuncBackend) -> None:
    backend.create(spec("half", cpu=0.5, command=BUSY))
    backend.create(spec("one", cpu=1.0, command=BUSY))
    wait_for(lambda: backend.usage("half").cpu_seconds > 0.05 and backend.usage("one").cpu_seconds > 0.05, what="busy loops")
    for _ in range(6):
        t0, busy0 = time.monotonic(), host_busy_seconds()
        c0 = {s: backend.usage(s).cpu_seconds for s in ("half", "one")}
        time.sleep(1.5)  # the measurement window itself
        dt = time.monotonic() - t0
        cores = {s: (backend.usage(s).cpu_seconds - c0[s]) / dt for s in c0}
        others = (host_busy_seconds() - busy0) / dt - sum(cores.values())
        assert cores["half"] <= 0.6 and cores["one"] <= 1.2, cores  # the quota is never exceeded
        if others <= (os.cpu_count() or 2) - 1.5 - 0.1:  # the host had room for both quotas
            break
    else:
        pytest.skip(f"host too busy for the lower bounds (others used {others:.2f} cores); upper bounds held")
    assert 0.4 <= cores["half"] <= 0.6, (cores, others)
    assert 0.8 <= cores["one"] <= 1.2, (cores, others)
    assert 0.3 <= backend.usage("half").cpu_cores <= 0.7  # the delta-based share agrees


def test_memory_hog_is_oom_killed_and_neighbour_survives(backend: RuncBackend) -> None:
    backend.create(spec("calm"))
    hog = ("python3", "-c", "import time; b = b'x' * (200 << 20); time.sleep(60)")
    backend.create(spec("hog", image="host", memory=64 * MiB, command=hog))
    st = wait_for(lambda: (s := backend.status("hog")).state == "failed" and s, timeout=20, what="hog to die")
    assert st.reason == "oom-killed"
    assert backend.status("calm").state == "running"


def test_fork_bomb_stops_at_pids_limit(make_backend) -> None:  # type: ignore[no-untyped-def]
    backend: RuncBackend = make_backend(pids_limit=40)
    # init forks the bomb once, then becomes sleep with exec (no fork), so the bomb cannot take
    # init down with it; every bomb process stays alive (sleep) to hold its pid.
    bomb = ("sh", "-c", "bomb() { bomb | bomb & sleep 1000; }; bomb & exec sleep 1000")
    backend.create(spec("bomb", cpu=0.25, command=bomb))
    events = cgroup_file(backend, "bomb", "pids", "pids.events")
    # The kernel refused forks at the limit: that, not a process count, is the proof (branches
    # of the bomb whose fork failed stop growing, so the population settles below 40).
    wait_for(lambda: _refusals(events.read_text()) > 0, timeout=20, what="the pids limit to refuse a fork")
    for _ in range(20):
        assert backend.usage("bomb").pids <= 40
    assert subprocess.run(["true"], timeout=5).returncode == 0  # the host can still fork
    assert backend.status("bomb").state == "running"


def _refusals(pids_events: str) -> int:
    """``max N`` in pids.events: forks refused because the limit was reached."""
    for line in pids_events.splitlines():
        key, _, value = line.partition(" ")
        if key == "max":
            return int(value)
    return 0


def cgroup_file(backend: RuncBackend, sliver: str, controller: str, name: str) -> Path:
    rel = backend.cg.leaf(sliver_key(sliver))
    if cgroups.version() == 2:
        return cgroups.ROOT / rel / name
    return cgroups.v1_mounts()[controller] / rel / name
