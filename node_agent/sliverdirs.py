"""Bookkeeping every real backend keeps per sliver, containers and VMs alike: a directory with
a ``meta.json``, the output log in it, and the usage reported from its cgroup and NIC.

A backend finds its slivers again after the agent restarts (or was killed) by reading these
records, so they are written atomically (a killed agent leaves the old record or the new one,
never half of one) and loaded without trusting any one of them: an unreadable record is
not fatal: it is logged with its path and kept in ``broken`` (by directory name, which is
the sliver's key) so the backend can remove what the sliver held by name. ``<root>/<key>/`` also holds whatever else the backend keeps for the
sliver (a container's bundle and disk, a VM's disk and initrd) and ``console.log``, the
sliver's output as its supervisor or console logger writes it (sliverlog.py).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import time
from pathlib import Path
from typing import Any

from node_agent.backends.base import BackendError
from node_agent.cgroups import CgroupUsage
from node_agent.machine_resources import sliver_key
from node_agent.sliverlog import read_log
from slices.model import Usage
from slices.statefile import write_atomic

log = logging.getLogger(__name__)

MIN_SAMPLE_S = 0.5  # shortest window for the current cpu share
LOG = "console.log"


class SliverDirs:
    """``<root>/<key>/meta.json`` for every sliver, loaded once and written through."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.metas: dict[str, dict[str, Any]] = {}
        self.rate = CpuRate()
        self.broken: dict[str, Path] = {}  # key -> its unreadable meta.json
        for d in root.iterdir():
            if not d.is_dir():
                continue
            path = d / "meta.json"
            try:
                meta = json.loads(path.read_text())
                self.metas[str(meta["id"])] = meta
            except FileNotFoundError:  # an agent killed early in a create: nothing to keep
                log.warning("%s has no meta.json (a create cut short): its resources are removed by name", d)
                self.broken[d.name] = path
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.error("%s is unreadable (%s): the sliver's resources are removed by name; the controller's desired set creates it again", path, exc)
                self.broken[d.name] = path

    def dir(self, sliver_id: str) -> Path:
        return self.root / sliver_key(sliver_id)

    def save(self, meta: dict[str, Any], *, durable: bool = True) -> None:
        """Write the record through. ``durable=False`` (a start-up's, written while it starts)
        skips the fsync, as runc does for its own state and the address pool for its file: a
        power loss takes the sliver down with the host, and a record lost with it is handled as
        unreadable (removed by name; the controller's desired set creates the sliver again).
        An fsync there cost ~1-2 ms of a container start, competing with runc for the cores."""
        # The record holds the sliver's spec, its secret environment values included: root's only.
        write_atomic(self.dir(meta["id"]) / "meta.json", json.dumps(meta).encode(), fsync=durable, mode=0o600)
        self.metas[meta["id"]] = meta

    def require(self, sliver_id: str) -> dict[str, Any]:
        """The sliver's record; a BackendError users can read when this node has no such sliver."""
        meta = self.metas.get(sliver_id)
        if meta is None:
            raise BackendError(f"no sliver {sliver_id!r} on this node")
        return meta

    def stopping(self, sliver_id: str) -> bool:
        """Record that the sliver is to stay stopped (a restarted agent must not start it);
        False for a sliver this node does not have."""
        meta = self.metas.get(sliver_id)
        if meta is None:
            return False
        meta["desired"] = "stopped"
        self.save(meta)
        return True

    def log(self, sliver_id: str) -> Path:
        return self.dir(sliver_id) / LOG

    def logs(self, sliver_id: str, offset: int | None, limit: int) -> tuple[bytes, int]:
        """``Backend.logs``: the sliver's output log from ``offset``."""
        self.require(sliver_id)
        return read_log(self.log(sliver_id), offset, limit)

    def usage(self, sliver_id: str, cg: CgroupUsage | None, net: tuple[int, int]) -> Usage:
        """``Backend.usage`` from the sliver's cgroup counters and its NIC's (rx, tx) bytes."""
        if cg is None:
            return Usage()
        started = float(self.metas.get(sliver_id, {}).get("started_at", time.time()))
        return Usage(
            cpu_seconds=cg.cpu_seconds,
            cpu_cores=self.rate.cores(sliver_id, cg.cpu_seconds, started),
            memory=cg.memory,
            memory_peak=cg.memory_peak,
            oom_kills=cg.oom_kills,
            pids=cg.pids,
            net_rx=net[0],
            net_tx=net[1],
        )

    def forget(self, sliver_id: str) -> None:
        self.metas.pop(sliver_id, None)
        self.rate.forget(sliver_id)

    def remove(self, sliver_id: str, timeout: float = 2.0) -> None:
        """Forget the sliver and delete its directory."""
        self.forget(sliver_id)
        self.remove_dir(self.dir(sliver_id), timeout)

    def remove_dir(self, sdir: Path, timeout: float = 2.0) -> None:
        """Delete a sliver's directory (deepest entries first; nothing may be mounted below
        it any more). A writer that outlives the sliver by a moment (a container's supervisor
        recording the exit of the init just killed) may add a file meanwhile: the directory
        is walked again until it is gone or ``timeout`` passes."""
        self.broken.pop(sdir.name, None)
        deadline = time.monotonic() + timeout
        while sdir.exists():
            for path in sorted(sdir.rglob("*"), key=lambda p: len(p.parts), reverse=True):
                with contextlib.suppress(FileNotFoundError):
                    if path.is_dir() and not path.is_symlink():
                        path.rmdir()
                    else:
                        path.unlink()
            try:
                sdir.rmdir()
            except FileNotFoundError:
                return
            except OSError as exc:
                if exc.errno != errno.ENOTEMPTY or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)


class CpuRate:
    """Cores in use from successive cumulative CPU-second readings, per sliver."""

    def __init__(self) -> None:
        self._prev: dict[str, tuple[float, float, float]] = {}

    def forget(self, sliver_id: str) -> None:
        self._prev.pop(sliver_id, None)

    def cores(self, sliver_id: str, cpu_seconds: float, started_at: float) -> float:
        now = time.monotonic()
        prev = self._prev.get(sliver_id)
        if prev is None:  # first look: the average since it started, once that means something
            elapsed = time.time() - started_at
            cores = cpu_seconds / elapsed if elapsed >= MIN_SAMPLE_S else 0.0
            self._prev[sliver_id] = (now, cpu_seconds, cores)
        elif now - prev[0] < MIN_SAMPLE_S:  # too short a window to mean anything: keep the last
            cores = prev[2]
        else:
            cores = (cpu_seconds - prev[1]) / (now - prev[0])
            self._prev[sliver_id] = (now, cpu_seconds, cores)
        return round(max(cores, 0.0), 4)
