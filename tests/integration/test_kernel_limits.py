"""The spec's maxima are what this kernel accepts.

slices/limits.py argues each bound from a kernel interface; these tests set each maximum for
real (a cgroup's memory and CPU limits, a sparse disk image file) and reads it back; the
bandwidth bounds are set through the agent's own tbf code in
tests/integration/machine/test_machine_network.py. Everything made carries a per-run name and is removed.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest

from node_agent.cgroup_limits import CPU_PERIOD_US, cpu_quota, cpu_shares, shares_to_weight
from node_agent.cgroups import v1_mounts
from slices import limits

pytestmark = [pytest.mark.root, pytest.mark.timeout(60), pytest.mark.skipif(os.geteuid() != 0, reason="needs root (netns, cgroups)")]

TOKEN = f"bnd{os.getpid() % 10000}{secrets.token_hex(2)}"


def _cgroup(controller: str) -> Path:
    mounts = v1_mounts()
    if controller in mounts:
        return mounts[controller] / TOKEN
    return Path("/sys/fs/cgroup") / TOKEN  # cgroup v2


def test_a_cgroup_takes_the_memory_and_cpu_maxima() -> None:
    made = []
    try:
        mem, cpu = _cgroup("memory"), _cgroup("cpu")
        for d in {mem, cpu}:
            d.mkdir()
            made.append(d)
        if (mem / "memory.limit_in_bytes").exists():  # v1
            (mem / "memory.limit_in_bytes").write_text(str(limits.MAX_MEMORY))
            assert int((mem / "memory.limit_in_bytes").read_text()) == limits.MAX_MEMORY
            (cpu / "cpu.cfs_period_us").write_text(str(CPU_PERIOD_US))
            (cpu / "cpu.cfs_quota_us").write_text(str(cpu_quota(limits.MAX_CPU)))
            assert int((cpu / "cpu.cfs_quota_us").read_text()) == limits.MAX_CPU * CPU_PERIOD_US
            (cpu / "cpu.shares").write_text(str(cpu_shares(limits.MAX_CPU)))
            assert int((cpu / "cpu.shares").read_text()) == 262144
        else:
            (mem / "memory.max").write_text(str(limits.MAX_MEMORY))
            assert int((mem / "memory.max").read_text()) == limits.MAX_MEMORY
            (cpu / "cpu.max").write_text(f"{cpu_quota(limits.MAX_CPU)} {CPU_PERIOD_US}")
            (cpu / "cpu.weight").write_text(str(shares_to_weight(cpu_shares(limits.MAX_CPU))))
            assert int((cpu / "cpu.weight").read_text()) == 10000
    finally:
        for d in made:
            d.rmdir()


def test_a_sparse_disk_image_of_the_maximum_size_fits_the_host_filesystem(tmp_path: Path) -> None:
    image = tmp_path / f"{TOKEN}.img"
    with open(image, "wb") as f:
        f.truncate(limits.MAX_DISK)
    assert image.stat().st_size == limits.MAX_DISK and image.stat().st_blocks == 0
    image.unlink()
