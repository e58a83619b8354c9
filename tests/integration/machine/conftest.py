"""Fixtures for the node-level resources' tests: a real bridge, address pool and node cgroup, as root."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from node_agent.machine_resources import MachineResources
from tests.integration.realhost import new_prefix, sweep, why_not

PREFIX = new_prefix("m")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    reason = why_not("mkfs.ext4/e2fsprogs") or (None if Path("/dev/net/tun").exists() else "no /dev/net/tun")
    for item in items:
        if "integration/machine" in str(item.fspath):
            item.add_marker(pytest.mark.root)
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture
def machine(tmp_path: Path) -> Iterator[MachineResources]:
    """Node ``m1`` (2 cores, 1 GiB) under this run's prefix; bridge and cgroups removed after."""
    m = MachineResources(tmp_path / "node", "m1", prefix=PREFIX, capacity_cpu=2.0, capacity_memory=1 << 30, images_dir=tmp_path / "images")
    yield m
    with contextlib.suppress(Exception):
        m.forget()
    sweep(tmp_path, PREFIX)
