"""Helpers shared by the runc backend tests (a plain module: the test dirs are not packages)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from node_agent.machine_resources import MachineResources
from slices.model import SliverSpec
from tests.integration.realhost import Execs, exec_in, new_prefix, run_in, sliver_spec

__all__ = ["PREFIX", "MiB", "agent_yaml", "make_machine", "py_in", "run_in", "spec"]

PREFIX = new_prefix("t")
MiB = 1 << 20


def make_machine(state: Path, images_dir: Path, node: str = "n1", **kw: Any) -> MachineResources:
    """The node-level resources of test node ``node`` (2 cores, 2 GiB), under ``state/node``;
    ``kw``: more of ``MachineResources``' settings (``host_access``, ``uid_block``)."""
    return MachineResources(state / "node", node, prefix=PREFIX, capacity_cpu=2.0, capacity_memory=2 << 30, images_dir=images_dir, **kw)


def py_in(backend: Execs, sliver: str, code: str, *args: str, timeout: float = 30.0) -> tuple[int, str, str]:
    """Run Python ``code`` in a ``host``-image sliver (its /usr is the host's); (exit code, stdout, stderr)."""
    return exec_in(backend, sliver, ["python3", "-c", code, *args], timeout)


def spec(sid: str, **kw: Any) -> SliverSpec:
    return sliver_spec(sid, {"isolation": "container", "cpu": 0.5, "memory": 64 * MiB, "disk": 64 * MiB}, **kw)


def agent_yaml(controller_url: str, keys_dir: Path, state: Path, prefix: str, subnet: str, extra: str = "") -> str:
    """``agent.yaml`` of a real one-node agent ``lab1`` (runc only, 0.2 s heartbeats) as a user writes it."""
    return (
        f"controller: {controller_url}\ncontroller_key: {keys_dir / 'controller.key'}\nname: lab1\nsite: lab\n"
        "location: {city: Princeton, country: US, region: north-america, lat: 40.34, lon: -74.65}\n"
        "capacity: {cpu: 2, memory: 2Gi, disk: 20Gi}\nreserve: {cpu: 0.5, memory: 256Mi, disk: 1Gi}\n"
        f"backends: {{container: runc}}\nstate_dir: {state}\ncgroup_prefix: {prefix}\nsubnet: {subnet}\nheartbeat_period: 0.2\n{extra}"
    )
