"""Build agents from settings: a real machine's agent, or many simulated ones.

The only place that maps backend names to backend classes.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from node_agent.agent import Agent
from node_agent.backends.base import Backend
from node_agent.backends.sim import SimBackend
from node_agent.machine import measured_capacity, node_info, parse_capacity, parse_location
from node_agent.settings import AgentSettings
from node_agent.worker import InlineExecutor, ThreadExecutor
from slices.errors import SpecError
from slices.model import Capacity, NodeInfo

log = logging.getLogger(__name__)

BACKENDS = ("sim", "runc", "qemu")
#: Options of the container backend that the VM backend shares (same bridge, cgroup tree, images).
SHARED_OPTIONS = ("prefix", "subnet", "images_dir", "log_max_bytes")


def make_backends(
    offers: dict[str, str], state_dir: Path | None, node: str, capacity: Capacity, runc: dict[str, Any] | None = None, qemu: dict[str, Any] | None = None
) -> dict[str, Backend]:
    """One backend object per backend name, shared by the isolation kinds it serves.

    ``runc`` holds the container backend's options (prefix, subnet, pids_limit, ...); the VM
    backend takes the shared ones from it plus its own ``qemu`` options (accel, ...)."""
    made: dict[str, Any] = {}
    out: dict[str, Backend] = {}
    for kind, name in sorted(offers.items()):
        if kind not in ("container", "vm"):
            raise SpecError(f"backends.{kind}", "unknown isolation kind; use container or vm")
        if name not in BACKENDS:
            raise SpecError(f"backends.{kind}", f"unknown backend {name!r}; available: {', '.join(BACKENDS)}")
        if name == "runc" and kind != "container":
            raise SpecError(f"backends.{kind}", "runc serves container isolation only (qemu serves vm)")
        if name == "qemu" and kind != "vm":
            raise SpecError(f"backends.{kind}", "qemu serves vm isolation only (runc serves container)")
        if name not in made:
            if name == "sim":
                kinds = frozenset(k for k, n in offers.items() if n == "sim")
                made[name] = SimBackend(state_dir / "sim-slivers.json" if state_dir else None, kinds=kinds)
            elif name == "qemu":
                from node_agent.backends.qemu import QemuBackend

                assert state_dir is not None
                shared = {k: v for k, v in (runc or {}).items() if k in SHARED_OPTIONS}
                made[name] = QemuBackend(state_dir / "qemu", node, capacity_cpu=capacity.cpu, capacity_memory=capacity.memory, **shared, **(qemu or {}))
            else:
                from node_agent.backends.runc import RuncBackend

                assert state_dir is not None
                made[name] = RuncBackend(state_dir / "runc", node, capacity_cpu=capacity.cpu, capacity_memory=capacity.memory, **(runc or {}))
        out[kind] = made[name]
    return out


def offered_images(backends: dict[str, Backend], configured: list[str]) -> list[str]:
    available: set[str] = set()
    for b in backends.values():
        available |= set(b.images())
    if not configured:
        return sorted(available)
    missing = [i for i in configured if i not in available]
    if missing:
        raise SpecError("images", f"{', '.join(missing)} cannot be run by this node's backends (they offer {', '.join(sorted(available)) or 'nothing'})")
    return sorted(configured)


def agent_from_settings(s: AgentSettings) -> Agent:
    """The agent of a real machine, as ``slicemesh agent`` runs it."""
    state_dir = Path(s.state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    measured = measured_capacity(state_dir)
    capacity = parse_capacity(s.capacity, "capacity", fallback=measured) if s.capacity else measured
    reserve = parse_capacity(s.reserve, "reserve")
    runc = {
        "prefix": s.cgroup_prefix,
        "subnet": s.subnet or None,
        "pids_limit": s.pids_limit,
        "images_dir": Path(s.images_dir),
        "runtime": s.runtime,
        "log_max_bytes": s.log_max_bytes,
    }
    qemu = {"accel": s.vm_accel}
    backends = make_backends({str(k): str(v) for k, v in s.backends.items()}, state_dir, s.name, capacity, runc, qemu)
    info = node_info(
        name=s.name,
        site=s.site or s.name.lower(),
        location=parse_location(s.location),
        capacity=capacity,
        reserve=reserve,
        offers={k: b.name for k, b in backends.items()},
        images=offered_images(backends, list(s.images)),
        labels=s.labels,
        overbook=s.overbook,
    )
    real = any(b.name != "sim" for b in backends.values())
    return Agent(
        info,
        backends,
        s.controller,
        state_dir=state_dir,
        period=s.heartbeat_period,
        misses=s.controller_misses,
        max_frame_bytes=s.max_frame_bytes,
        executor=ThreadExecutor(f"backend-{s.name}") if real else InlineExecutor(),
        clock=time.time,
    )


def simulated_agents(nodes: list[dict[str, Any]], controller: str, *, backend: str, state_dir: Path | None, period: float = 1.0, prefix: str = "slicemesh", first_subnet: int = 0) -> list[Agent]:
    """Agents for simulated machines; each gets its own socket, identity and state dir.

    With real containers each simulated machine gets its own cgroup subtree under ``prefix``,
    its own bridge and its own /24 (10.100.0.0/24, 10.100.1.0/24, ... by position).
    """
    agents = []
    for i, raw in enumerate(nodes):
        info = NodeInfo.from_wire(raw)
        sdir = state_dir / info.name if state_dir is not None else None
        if backend == "real":
            offers = {"container": "runc"}
        else:
            offers = {k: "sim" for k in info.offers}
        k = first_subnet + i
        runc = {"prefix": prefix, "subnet": f"10.{100 + k // 256}.{k % 256}.0/24"}
        backends = make_backends(offers, sdir, info.name, info.capacity, runc if backend == "real" else None)
        info = NodeInfo.from_wire({**raw, "offers": {k: b.name for k, b in backends.items()}, "images": offered_images(backends, [])})
        executor = ThreadExecutor(f"backend-{info.name}") if backend == "real" else InlineExecutor()
        # A simulated machine's desired set need not survive a power cut of the real one.
        agents.append(Agent(info, backends, controller, state_dir=sdir, period=period, executor=executor, clock=time.time, durable=backend == "real"))
    return agents
