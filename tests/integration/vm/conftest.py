"""Fixtures for the VM backend's integration tests: real QEMU guests (TCG here), cgroups, TAPs.

Boots are expensive (seconds of CPU each on a shared 2-core host), so one VM is shared by the
assertions that do not change it (test_vm_shared.py) and the rest boot only what they must.
Everything carries this run's ``PREFIX``; the session sweep removes leftovers by name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from vm_helpers import PREFIX, clean, make, make_machine, why_not

from node_agent.backends.qemu.backend import QemuBackend
from node_agent.machine_resources import MachineResources
from tests.integration.realhost import sweep


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    reason = why_not()
    for item in items:
        if "integration/vm" in str(item.fspath):
            item.add_marker(pytest.mark.root)
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def vm_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp(PREFIX)
    yield root
    sweep(root, PREFIX)


@pytest.fixture
def make_backend(vm_root: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., QemuBackend]]:
    """Factory of VM backends over a per-test state dir, all on one node; every sliver and
    node object is removed after."""
    made: list[QemuBackend] = []
    machines: list[MachineResources] = []
    state = vm_root / request.node.name[:40]

    def factory(**kw: Any) -> QemuBackend:
        if not machines:
            machines.append(make_machine(state))
        made.append(make(state / f"b{len(made)}", machines[0], **kw))
        return made[-1]

    yield factory
    clean(made, machines)
    sweep(state, PREFIX)
