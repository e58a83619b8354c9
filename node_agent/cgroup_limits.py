"""One formula from (cores, bytes, pids) to cgroup limits, for the node cap and every sliver.

Pure, so the exact numbers can be read and tested without root. Used where limits are
written directly (the node cgroup in cgroups.py, a VM's leaf) and where runc is told them
(backends/runc/oci.py): a container and a VM asking for the same cores get the same quota,
and the node cap is computed the same way as what it caps.

Two forms because hosts differ: cgroup v1 (and the "hybrid" layout, where v2 holds no
controllers) has one directory per controller; pure v2 has one directory of unified files.
"""

from __future__ import annotations

from dataclasses import dataclass

CPU_PERIOD_US = 100_000
SHARES_PER_CORE = 1024
MIN_QUOTA_US = 1000  # the kernel refuses a smaller CFS quota


def cpu_quota(cores: float) -> int:
    """CFS quota per ``CPU_PERIOD_US`` for ``cores``."""
    return max(MIN_QUOTA_US, round(cores * CPU_PERIOD_US))


def cpu_shares(cores: float) -> int:
    """Relative weight under contention, proportional to the cores asked for (min 2)."""
    return max(2, round(cores * SHARES_PER_CORE))


def shares_to_weight(shares: int) -> int:
    """The v2 ``cpu.weight`` runc itself derives from v1 shares, for identical behaviour."""
    return 1 + ((shares - 2) * 9999) // 262142


@dataclass(frozen=True)
class Limits:
    """What one sliver may use. ``swap_accounting`` False: the host cannot limit memory+swap,
    so only memory is limited (on a host without swap, the same thing)."""

    cpu: float
    memory: int
    pids: int
    swap_accounting: bool = True

    def check(self) -> None:
        """Refuse what the kernel would refuse half-way through writing the files."""
        if not self.cpu > 0:
            raise ValueError(f"cpu must be > 0 cores, not {self.cpu!r}")
        if self.memory < 1 << 20:
            raise ValueError(f"memory must be at least 1 MiB, not {self.memory!r} bytes")
        if self.pids < 1:
            raise ValueError(f"pids must be >= 1, not {self.pids!r}")


def v1_files(lim: Limits) -> dict[str, dict[str, str]]:
    """Controller -> {file: value}, in the order they must be written (memory before memsw)."""
    memory = {"memory.limit_in_bytes": str(lim.memory)}
    if lim.swap_accounting:
        memory["memory.memsw.limit_in_bytes"] = str(lim.memory)  # memory+swap == memory: no swap
    return {
        "cpu": {"cpu.cfs_period_us": str(CPU_PERIOD_US), "cpu.cfs_quota_us": str(cpu_quota(lim.cpu)), "cpu.shares": str(cpu_shares(lim.cpu))},
        "memory": memory,
        "pids": {"pids.max": str(lim.pids)},
    }


def v2_files(lim: Limits) -> dict[str, str]:
    """{unified file: value} for cgroup v2."""
    files = {
        "cpu.max": f"{cpu_quota(lim.cpu)} {CPU_PERIOD_US}",
        "cpu.weight": str(shares_to_weight(cpu_shares(lim.cpu))),
        "memory.max": str(lim.memory),
        "pids.max": str(lim.pids),
    }
    if lim.swap_accounting:
        files["memory.swap.max"] = "0"
    return files
