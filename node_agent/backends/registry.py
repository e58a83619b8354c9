"""Which backends exist: one table, backend name -> what it serves, its settings, how to make it.

Adding a backend is one row here plus its settings section in ``AgentSettings``
(a field named like the backend, typed by the row's ``settings`` class): ``build.py`` has no
per-backend code. A backend's module is imported only when a node uses it, so the schema
and the simulated agents never load netlink, runc or QEMU code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from node_agent.backends.base import Backend
from node_agent.backends.qemu.settings import QemuSettings
from node_agent.backends.runc.settings import RuncSettings
from slices.isolation import CONTAINER, ISOLATIONS, VM

if TYPE_CHECKING:
    from node_agent.machine_resources import MachineResources


@dataclass(frozen=True)
class BackendContext:
    """What a backend is made from on one node."""

    node: str
    #: the isolation kinds it serves on this node (a subset of its type's ``kinds``)
    kinds: frozenset[str]
    #: the agent's state directory; None for simulated machines that keep nothing
    state_dir: Path | None
    #: the node-level resources every real backend shares; None when no real backend runs
    machine: MachineResources | None
    #: its section of the agent settings (an instance of its type's ``settings``), or None
    settings: Any


@dataclass(frozen=True)
class BackendType:
    name: str
    #: isolation kinds it can serve
    kinds: frozenset[str]
    #: runs real slivers, so needs the node's MachineResources (and a worker thread)
    real: bool
    #: the dataclass of its settings section (``AgentSettings.<name>``), or None
    settings: type[Any] | None
    make: Callable[[BackendContext], Backend]


def _sim(ctx: BackendContext) -> Backend:
    from node_agent.backends.sim import SimBackend

    return SimBackend(ctx.state_dir / "sim-slivers.json" if ctx.state_dir else None, kinds=ctx.kinds)


def _runc(ctx: BackendContext) -> Backend:
    from node_agent.backends.runc.backend import RuncBackend

    assert ctx.state_dir is not None and ctx.machine is not None
    return RuncBackend(ctx.machine, ctx.state_dir / "runc", ctx.settings)


def _qemu(ctx: BackendContext) -> Backend:
    from node_agent.backends.qemu.backend import QemuBackend

    assert ctx.state_dir is not None and ctx.machine is not None
    return QemuBackend(ctx.machine, ctx.state_dir / "qemu", ctx.settings)


BACKENDS: dict[str, BackendType] = {
    b.name: b
    for b in (
        BackendType("sim", frozenset(ISOLATIONS), real=False, settings=None, make=_sim),
        BackendType("runc", frozenset({CONTAINER}), real=True, settings=RuncSettings, make=_runc),
        BackendType("qemu", frozenset({VM}), real=True, settings=QemuSettings, make=_qemu),
    )
}
