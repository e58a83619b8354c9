"""Build agents from settings: a real machine's agent, or many simulated ones.

Backends come from the table in ``backends/registry.py``; this module only checks a node's
offers against it and hands each backend its context (state, node resources, settings).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from node_agent.addresses import position_subnet
from node_agent.agent import Agent
from node_agent.backends.base import Backend, BackendError
from node_agent.backends.qemu.settings import QemuSettings
from node_agent.backends.registry import BACKENDS, BackendContext, BackendType
from node_agent.backends.runc.settings import RuncSettings
from node_agent.keys import agent_keys
from node_agent.machine import measured_capacity, node_info, parse_capacity, parse_location
from node_agent.settings import AgentSettings
from node_agent.userns import DEFAULT_BLOCK
from node_agent.worker import InlineExecutor, ThreadExecutor
from slices.errors import SpecError
from slices.isolation import CONTAINER, ISOLATIONS, VM
from slices.model import Capacity, NodeInfo
from slices.transport import ClientKeys, Keypair

if TYPE_CHECKING:
    from node_agent.machine_resources import MachineResources

log = logging.getLogger(__name__)

FACT_MAX = 256  # NodeInfo.facts values


def backend_types(offers: dict[str, str]) -> dict[str, BackendType]:
    """Isolation kind -> the backend type serving it, checked against the registry (before
    anything is made, so a bad config changes nothing on the machine)."""
    out = {}
    for kind, name in sorted(offers.items()):
        if kind not in ISOLATIONS:
            raise SpecError(f"backends.{kind}", f"unknown isolation kind; use {' or '.join(ISOLATIONS)}")
        bt = BACKENDS.get(name)
        if bt is None:
            raise SpecError(f"backends.{kind}", f"unknown backend {name!r}; available: {', '.join(BACKENDS)}")
        if kind not in bt.kinds:
            raise SpecError(f"backends.{kind}", f"{name} serves {' and '.join(sorted(bt.kinds))} isolation only")
        out[kind] = bt
    return out


def make_backends(
    offers: dict[str, str],
    node: str,
    state_dir: Path | None,
    machine: MachineResources | None = None,
    sections: Any = None,
    unusable: dict[str, str] | None = None,
) -> dict[str, Backend]:
    """One backend object per backend name, shared by the isolation kinds it serves.

    Real backends share ``machine`` (the node's bridge, address pool, cgroup, disks); each
    gets its settings section, ``getattr(sections, name)`` (the defaults without one).

    With ``unusable`` (an agent starting), each backend must also pass its start-up
    self-check; one that cannot be made or fails it is left out, with why, in ``unusable``
    (backend name -> reason), so the node never offers what it cannot run."""
    types = backend_types(offers)
    made: dict[str, Backend] = {}
    for bt in types.values():
        if bt.name not in made and (unusable is None or bt.name not in unusable):
            section = None
            if bt.settings is not None:
                section = getattr(sections, bt.name, None) or bt.settings()
            kinds = frozenset(k for k, t in types.items() if t is bt)
            try:
                backend = bt.make(BackendContext(node, kinds, state_dir, machine, section))
                why = backend.self_check() if unusable is not None else None
            except BackendError as exc:
                if unusable is None:
                    raise
                backend, why = None, exc.reason
            if why is not None and unusable is not None:
                log.error("node %s: backend %s is not offered: %s", node, bt.name, why)
                unusable[bt.name] = why
                if backend is not None:
                    backend.close()
            elif backend is not None:
                made[bt.name] = backend
    return {kind: made[bt.name] for kind, bt in types.items() if bt.name in made}


def checked_backends(offers: dict[str, str], node: str, state_dir: Path | None, machine: MachineResources | None, sections: Any) -> tuple[dict[str, Backend], dict[str, str]]:
    """The backends that passed their self-check, and facts saying why the others are not
    offered (``<name>.unusable``, shown by ``slicemesh nodes``). None passing is an error."""
    unusable: dict[str, str] = {}
    backends = make_backends(offers, node, state_dir, machine, sections, unusable)
    if not backends:
        raise SpecError("backends", "no backend of this node passed its start-up check: " + "; ".join(f"{n}: {why}" for n, why in sorted(unusable.items())))
    facts = {f"{name}.unusable": why[:FACT_MAX] for name, why in unusable.items()}
    if machine is not None:  # the controller refuses a node whose subnet overlaps another's
        facts.update({"net.subnet": machine.net.subnet, "net.nat": "on" if machine.net.nat else "off"})
    return backends, {**backend_facts(backends), **facts}


def backend_facts(backends: dict[str, Backend]) -> dict[str, str]:
    """What the node's backends found at start, for ``NodeInfo.facts``."""
    facts: dict[str, str] = {}
    for b in {id(b): b for b in backends.values()}.values():
        facts.update(b.facts())
    return facts


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
    offers = {str(k): str(v) for k, v in s.backends.items()}
    machine = None
    if any(bt.real for bt in backend_types(offers).values()):
        machine = make_machine(
            state_dir, s.name, capacity, prefix=s.cgroup_prefix, subnet=s.subnet or None, images_dir=Path(s.images_dir),
            host_access=list(s.sliver_host_access), uid_block=s.sliver_uid_block if s.sliver_userns else None,
            nat=s.sliver_nat, resolvers=list(s.sliver_resolvers),
        )  # fmt: skip
    try:
        backends, facts = checked_backends(offers, s.name, state_dir, machine, s)
    except SpecError:
        if machine is not None:  # nothing to run: take back the bridge and cgroup just made
            machine.forget()
        raise
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
        facts=facts,
    )
    real = machine is not None
    keys = agent_keys(s.controller_key, s.key_file, state_dir)
    log.info("node %s: key %s (an operator accepts it with `slicemesh keys accept %s` if it is pending)", s.name, keys.own.public, s.name)
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
        keys=keys,
        token=s.enrol_token or None,
        code_cache_bytes=s.code_cache_mib << 20,
        code_peers=s.code_peers,
        machine=machine,
    )


def make_machine(state_dir: Path, node: str, capacity: Capacity, **kw: Any) -> MachineResources:
    """The node-level resources of ``node``, under ``<state_dir>/node``, capped at ``capacity``."""
    from node_agent.machine_resources import MachineResources

    return MachineResources(state_dir / "node", node, capacity_cpu=capacity.cpu, capacity_memory=capacity.memory, **kw)


class _SimulatedSections:
    """Backend settings of simulated machines: they share one host, so none keeps warm slots
    (each would hold mounted disks and idle supervisor processes per machine)."""

    runc = RuncSettings(warm_slots=0)
    qemu = QemuSettings()


SIMULATED_SECTIONS = _SimulatedSections()
#: The real backend of each isolation kind, for ``--backend real``: a simulated machine offers
#: its kinds (all of them, unless its node record says fewer) through these.
REAL_BACKENDS = {CONTAINER: "runc", VM: "qemu"}


def simulated_agents(
    nodes: list[dict[str, Any]],
    controller: str,
    *,
    server_key: str,
    keys: dict[str, Keypair],
    backend: str,
    state_dir: Path | None,
    period: float = 1.0,
    prefix: str = "slicemesh",
    first_subnet: int = 0,
    positions: list[int] | None = None,
) -> list[Agent]:
    """Agents for simulated machines; each gets its own socket, key pair and state dir.

    With ``backend="real"`` each simulated machine runs real containers and VMs (the kinds its
    record offers, through ``REAL_BACKENDS``) and gets its own cgroup subtree under ``prefix``,
    its own bridge and its own /24 (``addresses.position_subnet``: 10.100.0.0/24, 10.100.1.0/24, ...),
    and its own block of host uids for its container slivers' user namespaces (64, 65, ... by
    position, distinct for 64 machines in a row). A machine's position is ``first_subnet`` plus
    its index in ``nodes``, or ``positions[index]`` when given (a machine started again on its
    own keeps the subnet and uids it had).
    """
    agents = []
    for i, raw in enumerate(nodes):
        info = NodeInfo.from_wire(raw)
        sdir = state_dir / info.name if state_dir is not None else None
        if backend == "real":
            offers = {kind: REAL_BACKENDS[kind] for kind in info.offers}
        else:
            offers = dict.fromkeys(info.offers, "sim")
        machine = None
        if backend == "real":
            assert sdir is not None
            k = positions[i] if positions is not None else first_subnet + i
            machine = make_machine(sdir, info.name, info.capacity, prefix=prefix, subnet=position_subnet(k), uid_block=DEFAULT_BLOCK + k % DEFAULT_BLOCK, nat=True)
        backends, facts = checked_backends(offers, info.name, sdir, machine, SIMULATED_SECTIONS) if backend == "real" else (make_backends(offers, info.name, sdir), {})
        made = {"offers": {k: b.name for k, b in backends.items()}, "images": offered_images(backends, []), "facts": facts}
        info = NodeInfo.from_wire({**raw, **made})
        executor = ThreadExecutor(f"backend-{info.name}") if backend == "real" else InlineExecutor()
        # A simulated machine's desired set need not survive a power cut of the real one.
        agent_keys_ = ClientKeys(server_key, keys[info.name])
        agents.append(
            Agent(info, backends, controller, state_dir=sdir, period=period, executor=executor, clock=time.time, keys=agent_keys_, durable=backend == "real", machine=machine)
        )
    return agents
