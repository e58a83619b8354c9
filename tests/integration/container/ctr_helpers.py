"""Helpers shared by the runc backend tests (a plain module: the test dirs are not packages)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from node_agent.machine_resources import MachineResources
from slices.model import SliverSpec
from tests.integration.realhost import new_prefix, run_in, sliver_spec

__all__ = ["PREFIX", "MiB", "make_machine", "run_in", "spec"]

PREFIX = new_prefix("t")
MiB = 1 << 20


def make_machine(state: Path, images_dir: Path) -> MachineResources:
    """The node-level resources of test node ``n1`` (2 cores, 2 GiB), under ``state/node``."""
    return MachineResources(state / "node", "n1", prefix=PREFIX, capacity_cpu=2.0, capacity_memory=2 << 30, images_dir=images_dir)


def spec(sid: str, **kw: Any) -> SliverSpec:
    return sliver_spec(sid, {"isolation": "container", "cpu": 0.5, "memory": 64 * MiB, "disk": 64 * MiB}, **kw)
