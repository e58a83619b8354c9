"""Helpers shared by the runc backend tests (a plain module: the test dirs are not packages)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from node_agent.backends.runc.backend import RuncBackend
from node_agent.machine_resources import MachineResources
from slices.model import Resources, SliverSpec
from tests.integration.realhost import new_prefix

PREFIX = new_prefix("t")
MiB = 1 << 20


def make_machine(state: Path, images_dir: Path) -> MachineResources:
    """The node-level resources of test node ``n1`` (2 cores, 2 GiB), under ``state/node``."""
    return MachineResources(state / "node", "n1", prefix=PREFIX, capacity_cpu=2.0, capacity_memory=2 << 30, images_dir=images_dir)


def run_in(backend: RuncBackend, sliver: str, script: str, timeout: float = 20.0) -> tuple[int, str, str]:
    """exec ``sh -c script`` in a sliver; (exit code, stdout, stderr)."""
    out, err, code = b"", b"", -1
    for kind, chunk in backend.exec(sliver, ["sh", "-c", script], timeout):
        if kind == "stdout":
            out += chunk
        elif kind == "stderr":
            err += chunk
        else:
            code = int(chunk)
    return code, out.decode(errors="replace"), err.decode(errors="replace")


def spec(sid: str, **kw: Any) -> SliverSpec:
    base: dict[str, Any] = {
        "id": sid, "slice": f"slice-{sid}", "isolation": "container", "image": "busybox",
        "cpu": 0.5, "memory": 64 * MiB, "disk": 64 * MiB,
    }  # fmt: skip
    base.update(kw)
    if base.get("command") is not None:
        base["command"] = tuple(base["command"])
    res = Resources(**{k: base.pop(k) or 0 for k in ("cpu", "memory", "disk", "bandwidth") if k in base})
    return SliverSpec(**base, resources=res)
