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


def make_machine(state: Path, images_dir: Path, node: str = "n1", **kw: Any) -> MachineResources:
    """The node-level resources of test node ``node`` (2 cores, 2 GiB), under ``state/node``;
    ``kw``: more of ``MachineResources``' settings (``host_access``, ``uid_block``)."""
    return MachineResources(state / "node", node, prefix=PREFIX, capacity_cpu=2.0, capacity_memory=2 << 30, images_dir=images_dir, **kw)


def exec_in(backend: RuncBackend, sliver: str, argv: list[str], timeout: float) -> tuple[int, str, str]:
    """exec ``argv`` in a sliver; (exit code, stdout, stderr)."""
    out, err, code = b"", b"", -1
    for kind, chunk in backend.exec(sliver, argv, timeout):
        if kind == "stdout":
            out += chunk
        elif kind == "stderr":
            err += chunk
        else:
            code = int(chunk)
    return code, out.decode(errors="replace"), err.decode(errors="replace")


def run_in(backend: RuncBackend, sliver: str, script: str, timeout: float = 20.0) -> tuple[int, str, str]:
    """exec ``sh -c script`` in a sliver; (exit code, stdout, stderr)."""
    return exec_in(backend, sliver, ["sh", "-c", script], timeout)


def py_in(backend: RuncBackend, sliver: str, code: str, *args: str, timeout: float = 30.0) -> tuple[int, str, str]:
    """Run Python ``code`` in a ``host``-image sliver (its /usr is the host's); (exit code, stdout, stderr)."""
    return exec_in(backend, sliver, ["python3", "-c", code, *args], timeout)


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
