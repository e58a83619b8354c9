"""The spec's maxima are what this kernel accepts, and one step past tbf's is what breaks.

slices/limits.py argues each bound from a kernel interface; these tests set each maximum for
real (tc tbf on a veth in a private netns, a cgroup's memory and CPU limits, a sparse disk
image file) and read it back. Everything made carries a per-run name and is removed.
"""

from __future__ import annotations

import os
import secrets
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from node_agent.cgroups import v1_mounts
from node_agent.oci import CPU_PERIOD_US, cpu_quota, cpu_shares, shares_to_weight
from slices import limits

pytestmark = [pytest.mark.root, pytest.mark.timeout(60), pytest.mark.skipif(os.geteuid() != 0, reason="needs root (netns, cgroups)")]

TOKEN = f"bnd{os.getpid() % 10000}{secrets.token_hex(2)}"


@pytest.fixture
def veth() -> Iterator[tuple[object, int]]:
    from pyroute2 import NetNS

    subprocess.run(["ip", "netns", "add", TOKEN], check=True)
    ns = NetNS(TOKEN)
    try:
        ns.link("add", ifname="v0", kind="veth", peer="v1")
        index = ns.link_lookup(ifname="v0")[0]
        ns.link("set", index=index, state="up")
        yield ns, index
    finally:
        ns.close()
        subprocess.run(["ip", "netns", "del", TOKEN], check=True)
    assert TOKEN not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


def test_tbf_takes_the_bandwidth_bounds_and_not_past_32_bits(veth: tuple[object, int]) -> None:
    from node_agent.netdev import _tbf

    ns, index = veth
    for bits in (limits.MIN_BANDWIDTH, limits.MAX_BANDWIDTH):
        _tbf(ns, index, bits)
        [q] = [m for m in ns.get_qdiscs(index=index) if m.get_attr("TCA_KIND") == "tbf"]
        assert q.get_attr("TCA_OPTIONS").get_attr("TCA_TBF_PARMS")["rate"] == bits // 8
    with pytest.raises(struct.error):  # what an agent met before the spec refused 35Gbit
        _tbf(ns, index, 35 * 1000**3)


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
