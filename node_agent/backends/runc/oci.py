"""Pure generation of the OCI runtime ``config.json`` for one container sliver.

Kept free of I/O so the exact limits a sliver gets can be read and tested without root:
the backend decides *what* (cores, bytes, paths), this module only says how runc is told.
The layout follows ``runc spec`` defaults (mounts, masked and read-only paths, capability
set) because those are what the runc maintainers consider a safe unprivileged baseline; on
top of them come a seccomp filter (seccomp.py) and, when the agent made one, the sliver's own
user namespace (node_agent/userns.py). docs/security.md says what all of it leaves a sliver.

Two cgroup forms exist because hosts differ: cgroup v1 (and the "hybrid" layout, where v2
holds no controllers) takes ``linux.resources.{cpu,memory,pids}``; a pure v2 host gets the
same limits as ``linux.resources.unified`` files so nothing depends on runc's conversion.
The numbers themselves come from ``node_agent/cgroup_limits.py``, which also computes the
node cap and a VM's limits, so every kind of sliver gets the same quota for the same cores.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from node_agent.backends.base import exit_state
from node_agent.backends.runc import seccomp
from node_agent.cgroup_limits import CPU_PERIOD_US, Limits, cpu_quota, cpu_shares, v2_files
from node_agent.userns import id_mappings

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

#: The capability set ``runc spec`` gives a container; slivers get nothing more.
DEFAULT_CAPS = ("CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE")

MASKED_PATHS = (
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/proc/scsi",
    # Newer than runc 1.1.5's defaults: runc main masks the TPM; moby masks interrupt counts
    # (GHSA-6fw5-f8r9-fgfm) and RAPL energy counters, a side channel (PLATYPUS, GHSA-jq35-85cj-fj4p).
    "/sys/devices/virtual/tpm",
    "/proc/interrupts",
    "/sys/devices/virtual/powercap",
)
READONLY_PATHS = (
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
)


@dataclass(frozen=True)
class ContainerConfig:
    """Everything that varies between slivers; the rest of config.json is fixed policy."""

    hostname: str
    args: Sequence[str]
    cgroups_path: str
    netns_path: str | None
    cpu: float
    memory: int
    pids_limit: int
    env: Mapping[str, str] = field(default_factory=dict)
    rootfs: str = "rootfs"
    #: (host path, container path) pairs bind-mounted read-only, e.g. the ``host`` image's /usr.
    ro_binds: Sequence[tuple[str, str]] = ()
    #: False when the host has no swap accounting (no memsw / memory.swap.max): then only
    #: the memory limit is set, which on a host without swap is the same thing.
    swap_accounting: bool = True
    #: The sliver's own user namespace (pinned by the agent, owning ``netns_path``) and the
    #: first host id its root maps to; None: root in the sliver is root on the host.
    userns_path: str | None = None
    host_id: int = 0


def _mounts(ro_binds: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
    mounts: list[dict[str, Any]] = [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {
            "destination": "/dev",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
        },
        {
            "destination": "/dev/pts",
            "type": "devpts",
            "source": "devpts",
            "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"],
        },
        {
            "destination": "/dev/shm",
            "type": "tmpfs",
            "source": "shm",
            "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        },
        {
            "destination": "/dev/mqueue",
            "type": "mqueue",
            "source": "mqueue",
            "options": ["nosuid", "noexec", "nodev"],
        },
        {
            "destination": "/sys",
            "type": "sysfs",
            "source": "sysfs",
            "options": ["nosuid", "noexec", "nodev", "ro"],
        },
        {
            "destination": "/sys/fs/cgroup",
            "type": "cgroup",
            "source": "cgroup",
            "options": ["nosuid", "noexec", "nodev", "relatime", "ro"],
        },
    ]
    for src, dst in ro_binds:
        mounts.append({"destination": dst, "type": "bind", "source": src, "options": ["rbind", "ro", "nosuid", "nodev"]})
    return mounts


def resources_v1(cpu: float, memory: int, pids_limit: int, swap_accounting: bool = True) -> dict[str, Any]:
    """``linux.resources`` for cgroup v1: CFS quota and shares, memory (= memory+swap), pids."""
    mem: dict[str, int] = {"limit": memory}
    if swap_accounting:
        mem["swap"] = memory  # memory+swap == memory: the sliver cannot swap
    return {
        "devices": [{"allow": False, "access": "rwm"}],
        "cpu": {"quota": cpu_quota(cpu), "period": CPU_PERIOD_US, "shares": cpu_shares(cpu)},  # as cgroup_limits.v1_files
        "memory": mem,
        "pids": {"limit": pids_limit},
    }


def resources_v2(cpu: float, memory: int, pids_limit: int, swap_accounting: bool = True) -> dict[str, Any]:
    """``linux.resources`` for cgroup v2, written as the unified files the kernel reads."""
    unified = v2_files(Limits(cpu, memory, pids_limit, swap_accounting))
    return {"devices": [{"allow": False, "access": "rwm"}], "unified": unified}


def make_config(cfg: ContainerConfig, cgroup_version: int) -> dict[str, Any]:
    """The whole config.json as a dict; ``cgroup_version`` 1 (v1 or hybrid) or 2 (unified)."""
    if cgroup_version not in (1, 2):
        raise ValueError(f"cgroup_version must be 1 or 2, not {cgroup_version!r}")
    resources = (resources_v1 if cgroup_version == 1 else resources_v2)(cfg.cpu, cfg.memory, cfg.pids_limit, cfg.swap_accounting)
    env = {"PATH": DEFAULT_PATH, "HOSTNAME": cfg.hostname, "TERM": "dumb"}
    env.update(cfg.env)
    namespaces: list[dict[str, str]] = [{"type": t} for t in ("pid", "ipc", "uts", "mount")]
    namespaces.append({"type": "network", "path": cfg.netns_path} if cfg.netns_path else {"type": "network"})
    ids: dict[str, Any] = {}
    if cfg.userns_path:
        namespaces.append({"type": "user", "path": cfg.userns_path})
        ids = {"uidMappings": id_mappings(cfg.host_id), "gidMappings": id_mappings(cfg.host_id)}
    caps = list(DEFAULT_CAPS)
    return {
        "ociVersion": "1.0.2-dev",
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": list(cfg.args),
            "env": [f"{k}={v}" for k, v in env.items()],
            "cwd": "/",
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps, "ambient": caps},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": cfg.rootfs, "readonly": False},
        "hostname": cfg.hostname,
        "mounts": _mounts(cfg.ro_binds),
        "linux": {
            "resources": resources,
            "cgroupsPath": cfg.cgroups_path,
            "namespaces": namespaces,
            **ids,
            # No linux.sysctl: ping_group_range (ICMP echo without CAP_NET_RAW) is set by the
            # agent in the sliver's netns (netns.py); runc in a user namespace cannot.
            "maskedPaths": list(MASKED_PATHS),
            "readonlyPaths": list(READONLY_PATHS),
            "seccomp": seccomp.profile(),
        },
    }


# ---- names and states shared with the runtime ----------------------------------------------

def map_state(runc_state: str | None, desired: str, oom_kills: int, exit_rec: dict[str, int] | None) -> tuple[str, str | None]:
    """(our state, reason) from runc's view plus what we know; pure, so it is unit-testable."""
    if runc_state == "running":
        return "running", None
    if runc_state == "created":
        return "pending", None
    if runc_state == "paused":
        return "stopped", "paused"
    if desired == "stopped":
        return "stopped", None
    if oom_kills > 0:
        return "failed", "oom-killed"
    if exit_rec is None:
        return "failed", "exited" if runc_state == "stopped" else "container is gone"
    return exit_state(exit_rec)
