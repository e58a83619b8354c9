"""A VM's share of the node: its cgroup leaf and its TAP on the node bridge.

Interim: the node-level object being built on the ``runc`` branch (``MachineResources``,
with ``net.setup_tap`` and a cgroup leaf for a process) is meant to own these; until it is on
main, the QEMU backend uses these two small helpers over the same ``cgroups.Cgroups`` parent
and the same ``netdev.Network`` bridge the container backend uses.

* cgroup: ``/<prefix>/<node>/<sliver>`` in the cpu, cpuacct, memory and pids hierarchies (v1)
  or the unified tree (v2), with a CPU quota of ``cpu`` cores and a memory limit; QEMU joins
  it before it starts (launcher.JOIN_AND_EXEC).
* TAP: persistent, single-queue, owned by root, made with the tun ioctls (QEMU only attaches to
  it by name, so it needs no helper script or privileges), enslaved to the bridge, up, and
  shaped with a tbf at ``bandwidth`` (what the guest receives).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import struct
from pathlib import Path

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from node_agent import cgroups
from node_agent.netdev import IFNAMSIZ, _tbf

TUNSETIFF = 0x400454CA
TUNSETPERSIST = 0x400454CB
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
ENODEV, ENOENT = 19, 2


class HostError(Exception):
    pass


def tap_name(prefix: str, node: str, sliver: str) -> str:
    """``<prefix[:5]>t<hash9>``: recognisable by prefix, unique per (prefix, node, sliver), <= 15 chars."""
    return f"{prefix[:5]}t{hashlib.sha1(f'{prefix}/{node}/{sliver}'.encode()).hexdigest()[:9]}"[:IFNAMSIZ]


class Taps:
    """TAP devices on one bridge, through one netlink socket."""

    def __init__(self, bridge: str) -> None:
        self.bridge = bridge
        self._ipr = IPRoute()

    def close(self) -> None:
        self._ipr.close()

    def setup(self, name: str, bandwidth: int | None) -> None:
        """Create (idempotent), enslave, bring up and shape TAP ``name``."""
        if not self._ipr.link_lookup(ifname=name):
            try:
                fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
            except OSError as exc:
                raise HostError(f"cannot open /dev/net/tun ({exc.strerror}): VM slivers need TAP devices") from None
            try:
                fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), IFF_TAP | IFF_NO_PI))
                fcntl.ioctl(fd, TUNSETPERSIST, 1)
            except OSError as exc:
                raise HostError(f"cannot create TAP device {name}: {exc.strerror}") from None
            finally:
                os.close(fd)
        try:
            bridge = self._ipr.link_lookup(ifname=self.bridge)
            if not bridge:
                raise HostError(f"bridge {self.bridge} is missing")
            idx = self._ipr.link_lookup(ifname=name)[0]
            self._ipr.link("set", index=idx, master=bridge[0], state="up")
            if bandwidth:
                _tbf(self._ipr, idx, bandwidth)
        except (NetlinkError, IndexError) as exc:
            raise HostError(f"cannot attach TAP device {name} to bridge {self.bridge}: {exc}") from None

    def teardown(self, name: str) -> None:
        for idx in self._ipr.link_lookup(ifname=name):
            try:
                self._ipr.link("del", index=idx)
            except NetlinkError as exc:
                if exc.code not in (ENODEV, ENOENT):
                    raise

    @staticmethod
    def counters(name: str) -> tuple[int, int]:
        """(rx, tx) bytes as the guest sees them: what the TAP sends is what the guest receives."""
        stats = Path("/sys/class/net") / name / "statistics"
        try:
            return int((stats / "tx_bytes").read_text()), int((stats / "rx_bytes").read_text())
        except (OSError, ValueError):
            return 0, 0


def _write(path: Path, value: str) -> None:
    with open(path, "w", encoding="ascii") as f:
        f.write(value)


def create_leaf(cg: cgroups.Cgroups, key: str, cpu: float, memory_limit: int) -> list[Path]:
    """Make the sliver's cgroup with its limits (idempotent); the ``cgroup.procs`` files to join."""
    rel = cg.leaf(key)
    quota = max(int(cpu * cgroups.CPU_PERIOD_US), 1000)
    if cg.layout == "v2":
        d = cg.root / rel
        d.mkdir(exist_ok=True)
        _write(d / "cpu.max", f"{quota} {cgroups.CPU_PERIOD_US}")
        _write(d / "memory.max", str(memory_limit))
        if (d / "memory.swap.max").exists():
            _write(d / "memory.swap.max", "0")
        return [d / "cgroup.procs"]
    mounts = cgroups.v1_mounts()
    dirs: dict[Path, None] = {}
    for ctrl in cgroups.V1_CONTROLLERS:
        if ctrl in mounts:
            dirs[mounts[ctrl] / rel] = None
    for d in dirs:
        d.mkdir(exist_ok=True)
    if "cpu" in mounts:
        _write(mounts["cpu"] / rel / "cpu.cfs_period_us", str(cgroups.CPU_PERIOD_US))
        _write(mounts["cpu"] / rel / "cpu.cfs_quota_us", str(quota))
    if "memory" in mounts:
        mem = mounts["memory"] / rel
        _write(mem / "memory.limit_in_bytes", str(memory_limit))
        if (mem / "memory.memsw.limit_in_bytes").exists():  # no swapping around the limit
            _write(mem / "memory.memsw.limit_in_bytes", str(memory_limit))
    return [d / "cgroup.procs" for d in dirs]
