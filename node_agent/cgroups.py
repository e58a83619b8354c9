"""Control groups: which layout the host has, the node-level parent, per-sliver leaves, usage, cleanup.

This module owns ``/<prefix>/<node>``, which caps the *simulated machine* at its declared
capacity so that slivers together (containers and VMs alike) can never use more than the node
advertises to the controller, whatever the real host has. runc creates a container's leaf
below it from ``cgroupsPath``; a process runc does not manage (a VM's QEMU) gets its leaf from
``create_leaf`` with the same limits (cgroup_limits.py) and is moved in with ``join``. Usage is
read straight from cgroup files (no runc process per poll).

Layouts: ``v1`` (one hierarchy per controller), ``hybrid`` (v1 controllers plus a v2 mount
holding none of them: treated as v1, which is what runc does too) and ``v2`` (unified).
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from node_agent.cgroup_limits import CPU_PERIOD_US, Limits, cpu_quota, v1_files, v2_files

ROOT = Path("/sys/fs/cgroup")
V1_CONTROLLERS = ("cpu", "cpuacct", "memory", "pids")


def detect(root: Path = ROOT) -> str:
    """Return "v2" when the unified tree is mounted at ``root``; "hybrid" when v1 plus an empty v2; else "v1"."""
    if (root / "cgroup.controllers").exists():
        return "v2"
    unified = root / "unified" / "cgroup.controllers"
    if unified.exists():
        return "hybrid"
    return "v1"


def version(root: Path = ROOT) -> int:
    """The form of limits runc should be given: 2 only on a pure v2 host."""
    return 2 if detect(root) == "v2" else 1


def v1_mounts() -> dict[str, Path]:
    """Controller name -> mount point of every v1 hierarchy (co-mounted ones share a path)."""
    found: dict[str, Path] = {}
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fstype, _src, opts = ([*right.split(), "", "", ""])[:3]
            if fstype != "cgroup":
                continue
            mnt = Path(left.split()[4])
            for opt in opts.split(","):
                if opt.startswith("name=") or (opt not in ("rw", "ro", "relatime", "noexec", "nosuid", "nodev") and "=" not in opt):
                    found[opt] = mnt
    return found


def hierarchies() -> list[Path]:
    """Mount points of every v1 hierarchy plus a hybrid host's v2 mount (runc uses it too)."""
    found = set(v1_mounts().values())
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            if right.startswith("cgroup2 "):
                found.add(Path(left.split()[4]))
    return sorted(found)


def swap_accounting(root: Path = ROOT) -> bool:
    """Whether a memory+swap limit can be set (runc fails when told to and it cannot)."""
    if detect(root) == "v2":
        return (root / "memory.swap.max").exists() or any(root.glob("*/memory.swap.max"))
    mem = v1_mounts().get("memory")
    return bool(mem and (mem / "memory.memsw.limit_in_bytes").exists())


def _write(path: Path, value: str) -> None:
    with open(path, "w", encoding="ascii") as f:
        f.write(value)


def _read_int(path: Path) -> int:
    try:
        raw = path.read_text().strip()
    except OSError:
        return 0
    return 0 if raw in ("", "max") else int(raw)


def _read_keyed(path: Path) -> dict[str, int]:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {}
    out: dict[str, int] = {}
    for line in lines:
        key, _, val = line.partition(" ")
        if val.strip().lstrip("-").isdigit():
            out[key] = int(val)
    return out


class CgroupError(Exception):
    pass


@dataclass(frozen=True)
class CgroupUsage:
    cpu_seconds: float
    memory: int
    memory_peak: int
    oom_kills: int
    pids: int


class Cgroups:
    """The node-level parent ``/<prefix>/<node>`` and reads of the leaves runc makes under it."""

    def __init__(self, prefix: str, node: str, root: Path = ROOT) -> None:
        self.root = root
        self.layout = detect(root)
        self.rel = f"{prefix}/{node}"
        self.prefix = prefix
        self._mounts = v1_mounts() if self.layout != "v2" else {}

    # -- node parent ------------------------------------------------------------------

    def _dirs(self, rel: str) -> dict[str, Path]:
        """Controller -> directory of cgroup ``rel`` (one entry, "unified", on v2)."""
        if self.layout == "v2":
            return {"unified": self.root / rel}
        return {c: self._mounts[c] / rel for c in V1_CONTROLLERS if c in self._mounts}

    def _tops(self) -> list[Path]:
        """Every hierarchy a cgroup lives in: the one tree on v2; on v1 every mounted
        hierarchy, not only the limited ones, because runc makes its leaves in all of them
        (blkio, devices, freezer ...) and so must we, or they outlive the sliver."""
        return [self.root] if self.layout == "v2" else hierarchies()

    def _mkdirs(self, rel: str) -> None:
        """Make ``rel`` in every hierarchy. Several agent hosts may make a shared prefix at
        once (a simulation's machines run in several processes): whoever finds it made, or
        made but its cpuset still empty, goes on as if it had made it."""
        for mnt in self._tops():
            path = mnt / rel
            with contextlib.suppress(FileExistsError):
                path.mkdir()
            if (path / "cpuset.cpus").exists():  # cpuset children start empty: filled from the parent
                for f in ("cpuset.cpus", "cpuset.mems"):
                    if not (path / f).read_text().strip():
                        _write(path / f, (path.parent / f).read_text().strip() or "\n")

    def ensure_node(self, capacity_cpu: float | None, capacity_memory: int | None) -> None:
        """Create ``/<prefix>/<node>`` capped at the declared capacity (idempotent)."""
        quota = str(cpu_quota(capacity_cpu)) if capacity_cpu else None  # the slivers' formula
        if self.layout == "v2":
            ctl = "+cpu +memory +pids"
            _write(self.root / "cgroup.subtree_control", ctl)
            for rel in (self.prefix, self.rel):
                (self.root / rel).mkdir(exist_ok=True)
                _write(self.root / rel / "cgroup.subtree_control", ctl)
            node = self.root / self.rel
            _write(node / "cpu.max", f"{quota or 'max'} {CPU_PERIOD_US}")
            _write(node / "memory.max", str(capacity_memory) if capacity_memory else "max")
            if (node / "memory.swap.max").exists():
                _write(node / "memory.swap.max", "0")
            return
        self._mkdirs(self.prefix)
        self._mkdirs(self.rel)
        for ctrl, path in self._dirs(self.rel).items():
            if ctrl == "cpu":
                _write(path / "cpu.cfs_period_us", str(CPU_PERIOD_US))
                _write(path / "cpu.cfs_quota_us", quota or "-1")
            elif ctrl == "memory":
                _write(path / "memory.limit_in_bytes", str(capacity_memory) if capacity_memory else "-1")

    def remove_node(self) -> None:
        """Remove the node parent (and the prefix level when empty); for tests and uninstall."""
        self.remove(self.rel)
        for mnt in self._tops():
            _rmdir_quiet(mnt / self.prefix)

    # -- slivers ----------------------------------------------------------------------

    def leaf(self, sliver: str) -> str:
        return f"{self.rel}/{sliver}"

    def create_leaf(self, sliver: str, limits: Limits) -> None:
        """The sliver's leaf for a process runc does not start (a VM's QEMU), limited as a
        container asking for the same would be. Idempotent; on failure nothing is left."""
        try:
            limits.check()
        except ValueError as exc:
            raise CgroupError(str(exc)) from None
        rel = self.leaf(sliver)
        try:
            self._mkdirs(rel)
            if self.layout == "v2":
                leaf = self.root / rel
                for name, value in v2_files(limits).items():
                    _write(leaf / name, value)
            else:
                files = v1_files(limits)
                for ctrl, path in self._dirs(rel).items():
                    for name, value in files.get(ctrl, {}).items():
                        _write(path / name, value)
        except OSError as exc:
            self.remove(rel)
            raise CgroupError(f"cgroup {rel}: {exc.strerror or exc}") from None

    def join(self, sliver: str, pid: int) -> None:
        """Move process ``pid`` into the sliver's leaf in every hierarchy; its future children
        start there. Move it before it allocates: memory already charged stays where it was."""
        rel = self.leaf(sliver)
        for mnt in self._tops():
            try:
                _write(mnt / rel / "cgroup.procs", str(pid))
            except FileNotFoundError:
                raise CgroupError(f"no cgroup {rel} (create_leaf first)") from None
            except ProcessLookupError:
                raise CgroupError(f"no process {pid}") from None

    def pids(self, sliver: str) -> list[int]:
        """Processes in the sliver's leaf (empty when it has none)."""
        try:
            return [int(x) for x in (self._tops()[0] / self.leaf(sliver) / "cgroup.procs").read_text().split()]
        except (OSError, IndexError):
            return []

    def remove_leaf(self, sliver: str, timeout: float = 5.0) -> None:
        """Kill whatever still runs in the sliver's leaf, then remove it from every hierarchy.

        For leaves this module made; runc removes its own on ``runc delete``."""
        deadline = time.monotonic() + timeout
        while (left := self.pids(sliver)) and time.monotonic() < deadline:
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.01)
        self.remove(self.leaf(sliver), max(0.0, deadline - time.monotonic()))
        if self.exists(sliver):
            raise CgroupError(f"cgroup {self.leaf(sliver)} is still busy after {timeout:g} s")

    def exists(self, sliver: str) -> bool:
        return any(p.is_dir() for p in self._dirs(self.leaf(sliver)).values())

    def usage(self, sliver: str) -> CgroupUsage | None:
        """Counters of the sliver's cgroup, or None when it has none (never started, deleted)."""
        dirs = self._dirs(self.leaf(sliver))
        if self.layout == "v2":
            d = dirs["unified"]
            if not d.is_dir():
                return None
            current = _read_int(d / "memory.current")
            return CgroupUsage(
                cpu_seconds=_read_keyed(d / "cpu.stat").get("usage_usec", 0) / 1e6,
                memory=current,
                memory_peak=max(current, _read_int(d / "memory.peak")),
                oom_kills=_read_keyed(d / "memory.events").get("oom_kill", 0),
                pids=_read_int(d / "pids.current"),
            )
        mem = dirs.get("memory")
        if mem is None or not mem.is_dir():
            return None
        acct = dirs.get("cpuacct")
        return CgroupUsage(
            cpu_seconds=_read_int(acct / "cpuacct.usage") / 1e9 if acct else 0.0,
            memory=_read_int(mem / "memory.usage_in_bytes"),
            memory_peak=_read_int(mem / "memory.max_usage_in_bytes"),
            oom_kills=_read_keyed(mem / "memory.oom_control").get("oom_kill", 0),
            pids=_read_int(dirs["pids"] / "pids.current") if "pids" in dirs else 0,
        )

    def remove(self, rel: str, timeout: float = 2.0) -> None:
        """rmdir ``rel`` and everything below it in every hierarchy, leaf first.

        runc normally removes a leaf on ``runc delete``; this catches what a crash left, in
        every mounted controller (runc also creates cpuset, devices, freezer ... leaves).
        A cgroup whose tasks are still exiting answers EBUSY for a moment, hence the retry.
        """
        tops = [m / rel for m in self._tops()]
        deadline = time.monotonic() + timeout
        for top in tops:
            if not top.is_dir():
                continue
            dirs = [Path(d) for d, _, _ in os.walk(top, topdown=False)]
            for d in dirs:
                while not _rmdir_quiet(d) and time.monotonic() < deadline:
                    time.sleep(0.01)


def _rmdir_quiet(path: Path) -> bool:
    """True once ``path`` is gone; False while it is busy."""
    try:
        path.rmdir()
    except FileNotFoundError:
        return True
    except OSError as exc:
        if exc.errno in (errno.EBUSY, errno.ENOTEMPTY):
            return False
        raise
    return True
