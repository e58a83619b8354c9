"""Bookkeeping every real backend keeps per sliver: a directory with a ``meta.json``, and a CPU rate.

A backend finds its slivers again after the agent restarts (or was killed) by reading these
records, so they are written atomically (a killed agent leaves the old record or the new one,
never half of one) and loaded without trusting any one of them: an unreadable record is
skipped, not fatal. ``<root>/<key>/`` also holds whatever else the backend keeps for the
sliver (a container's bundle and disk, a VM's disk and initrd, the output log).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

from node_agent.machine_resources import sliver_key

MIN_SAMPLE_S = 0.5  # shortest window for the current cpu share


class SliverDirs:
    """``<root>/<key>/meta.json`` for every sliver, loaded once and written through."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.metas: dict[str, dict[str, Any]] = {}
        for d in root.iterdir():
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                meta = json.loads((d / "meta.json").read_text())
                self.metas[meta["id"]] = meta

    def dir(self, sliver_id: str) -> Path:
        return self.root / sliver_key(sliver_id)

    def save(self, meta: dict[str, Any]) -> None:
        path = self.dir(meta["id"]) / "meta.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(meta))
        os.replace(tmp, path)
        self.metas[meta["id"]] = meta

    def forget(self, sliver_id: str) -> None:
        self.metas.pop(sliver_id, None)

    def remove(self, sliver_id: str) -> None:
        """Forget the sliver and delete its directory (deepest entries first; nothing may be
        mounted below it any more)."""
        self.forget(sliver_id)
        sdir = self.dir(sliver_id)
        if not sdir.exists():
            return
        for path in sorted(sdir.rglob("*"), key=lambda p: len(p.parts), reverse=True):
            if path.is_dir() and not path.is_symlink():
                path.rmdir()
            else:
                path.unlink()
        sdir.rmdir()


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
