"""The one formula from cores, bytes and pids to cgroup limits (node cap, containers, VMs)."""

from __future__ import annotations

import pytest

from node_agent.cgroup_limits import Limits, cpu_quota, cpu_shares, shares_to_weight, v1_files, v2_files

pytestmark = pytest.mark.timeout(10)


def test_cpu_rounding_and_minimums() -> None:
    assert cpu_quota(0.5) == 50_000 and cpu_quota(2.0) == 200_000
    assert cpu_quota(0.29) == 29_000, "rounded, not truncated (0.29 * 100000 is 28999.99...)"
    assert cpu_quota(0.001) == 1000
    assert cpu_shares(0.0) == 2 and cpu_shares(2) == 2048
    assert shares_to_weight(2) == 1 and shares_to_weight(262144) == 10000


def test_v1_files_in_write_order() -> None:
    files = v1_files(Limits(1.5, 256 << 20, 64))
    assert files["cpu"] == {"cpu.cfs_period_us": "100000", "cpu.cfs_quota_us": "150000", "cpu.shares": "1536"}
    assert list(files["memory"].items()) == [("memory.limit_in_bytes", str(256 << 20)), ("memory.memsw.limit_in_bytes", str(256 << 20))]
    assert files["pids"] == {"pids.max": "64"}
    assert "memory.memsw.limit_in_bytes" not in v1_files(Limits(1.5, 256 << 20, 64, swap_accounting=False))["memory"]


def test_v2_files() -> None:
    assert v2_files(Limits(0.5, 64 << 20, 100)) == {
        "cpu.max": "50000 100000", "cpu.weight": str(shares_to_weight(512)),
        "memory.max": str(64 << 20), "memory.swap.max": "0", "pids.max": "100",
    }  # fmt: skip


@pytest.mark.parametrize(("lim", "what"), [(Limits(0, 64 << 20, 1), "cpu"), (Limits(-1, 64 << 20, 1), "cpu"), (Limits(1, 1000, 1), "memory"), (Limits(1, 64 << 20, 0), "pids")])
def test_impossible_limits_are_refused(lim: Limits, what: str) -> None:
    with pytest.raises(ValueError, match=what):
        lim.check()
