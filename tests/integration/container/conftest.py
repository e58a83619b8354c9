"""Fixtures for the runc backend's integration tests: real cgroups, mounts, netns and runc, as root.

Everything a test makes carries ``PREFIX`` (unique per test run), so parallel or crashed runs
do not collide, and the session sweep can remove leftovers by name even after a failure.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from ctr_helpers import PREFIX, make_machine

from node_agent.backends.runc import rootfs
from node_agent.backends.runc.backend import RuncBackend
from node_agent.backends.runc.settings import RuncSettings
from tests.integration.realhost import sweep, why_not


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    reason = why_not("runc/runc", "mkfs.ext4/e2fsprogs")
    for item in items:
        if "integration/container" in str(item.fspath):
            item.add_marker(pytest.mark.root)
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def state_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp(PREFIX)
    yield root
    sweep(root, PREFIX)


@pytest.fixture(scope="session")
def images_dir(state_root: Path) -> Path:
    d = state_root / "images"
    rootfs.prepare("busybox", d)
    rootfs.prepare("host", d)
    return d


@pytest.fixture
def make_backend(state_root: Path, images_dir: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., RuncBackend]]:
    """Factory of backends over a per-test state dir; every sliver and node object is removed after.

    Each call is a fresh start of the node (new machine resources and backend over the same
    state), as after an agent restart. ``machine``: node-level settings (``host_access``,
    ``uid_block``); the rest are the runc section's."""
    made: list[RuncBackend] = []
    state = state_root / request.node.name[:40]

    def make(machine: dict[str, Any] | None = None, **kw: Any) -> RuncBackend:
        b = RuncBackend(make_machine(state, images_dir, **(machine or {})), state / "runc", RuncSettings(**kw))
        made.append(b)
        return b

    yield make
    for b in reversed(made):
        with contextlib.suppress(Exception):
            for st in b.list():
                b.destroy(st.id)
        with contextlib.suppress(Exception):
            b.close()
    if made:
        with contextlib.suppress(Exception):
            made[-1].machine.forget()
    for b in made[:-1]:
        with contextlib.suppress(Exception):
            b.machine.close()
    sweep(state, PREFIX)


@pytest.fixture
def backend(make_backend: Callable[..., RuncBackend]) -> RuncBackend:
    return make_backend()
