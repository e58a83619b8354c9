"""Fixtures for the runc backend's integration tests: real cgroups, mounts, netns and runc, as root.

Everything a test makes carries ``PREFIX`` (unique per test run), so parallel or crashed runs
do not collide, and the session sweep can remove leftovers by name even after a failure.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from ctr_helpers import PREFIX, sweep

from node_agent.backends.runc import RuncBackend, rootfs


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "needs root (cgroups, mounts, netns)"
    if shutil.which("runc") is None:
        return "runc is not installed (Debian package runc)"
    if shutil.which("mkfs.ext4") is None:
        return "mkfs.ext4 is not installed (Debian package e2fsprogs)"
    if not Path("/dev/loop-control").exists():
        return "no loop devices"
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    reason = _why_not()
    for item in items:
        if "integration/container" in str(item.fspath):
            item.add_marker(pytest.mark.root)
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def state_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp(PREFIX)
    yield root
    sweep(root)


@pytest.fixture(scope="session")
def images_dir(state_root: Path) -> Path:
    d = state_root / "images"
    rootfs.prepare("busybox", d)
    rootfs.prepare("host", d)
    return d


@pytest.fixture
def make_backend(state_root: Path, images_dir: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., RuncBackend]]:
    """Factory of backends over a per-test state dir; every sliver and node object is removed after."""
    made: list[RuncBackend] = []
    state = state_root / request.node.name[:40]

    def make(**kw: Any) -> RuncBackend:
        opts: dict[str, Any] = {"prefix": PREFIX, "capacity_cpu": 2.0, "capacity_memory": 2 << 30, "images_dir": images_dir}
        opts.update(kw)
        b = RuncBackend(state, "n1", **opts)
        made.append(b)
        return b

    yield make
    for b in reversed(made):
        with contextlib.suppress(Exception):
            for st in b.list():
                b.destroy(st.id)
    if made:
        with contextlib.suppress(Exception):
            made[-1].forget_node()
    sweep(state)


@pytest.fixture
def backend(make_backend: Callable[..., RuncBackend]) -> RuncBackend:
    return make_backend()
