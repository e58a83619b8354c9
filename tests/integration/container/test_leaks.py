"""Fifty create/destroy cycles leave the host's cgroups, mounts, loops, links, netns and processes as they were."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from ctr_helpers import PREFIX, spec

from node_agent.backends.runc.backend import RuncBackend

pytestmark = pytest.mark.timeout(120)


def snapshot(state: Path, spare: int | None) -> dict[str, object]:
    """What this test's node owns, by name and path; the one idle spare supervisor is left out.

    Host-wide counts are not compared: other test runs on the same machine make and remove
    mounts, loop devices and links at the same time. Everything a sliver makes carries the
    state directory in its path (mounts, loop backing files, processes) or the run's prefix
    in its name (links, netns, cgroups), so a leak is still seen."""
    mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    loops = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout.splitlines()
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout.splitlines()
    netns = sorted(p.name for p in Path("/run/netns").iterdir()) if Path("/run/netns").exists() else []
    cgs = sorted(str(p) for p in Path("/sys/fs/cgroup").glob(f"*/{PREFIX}/**"))
    procs = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if str(state).encode() in (proc / "cmdline").read_bytes() and proc.name != str(spare):
                    procs.append(proc.name)
            except OSError:
                pass
    return {
        "mounts_ours": [m for m in mounts if str(state) in m],
        "loops_ours": [x for x in loops if str(state) in x],
        "links_ours": [x for x in links if PREFIX[:5] in x and "-" not in x.split(":")[1]],
        "netns": [n for n in netns if n.startswith(PREFIX)],
        "cgroups": cgs,
        "procs": procs,
    }


def test_fifty_cycles_leave_nothing(backend: RuncBackend) -> None:
    before = snapshot(backend.state_dir, backend.supervisors.spare_pid)
    for i in range(50):
        sid = f"cycle{i}"
        assert backend.create(spec(sid, bandwidth=50_000_000)).state == "running"
        backend.destroy(sid)
    backend.net.release_spare()  # the one netns + veth kept ready for the next sliver
    after = snapshot(backend.state_dir, backend.supervisors.spare_pid)
    assert after == before
    assert list(backend.slivers_dir.iterdir()) == []
