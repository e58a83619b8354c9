"""VMs on the node's side, without booting any: the settings section, what a node says about its
VMs (facts) and how ``slicemesh nodes`` shows it, which backends a real simulated machine runs."""

from __future__ import annotations

import pytest

from node_agent.backends.qemu.settings import QemuSettings
from node_agent.build import REAL_BACKENDS, backend_facts
from node_agent.settings import AgentSettings
from slices import render
from slices.catalogue import builtin_catalogue
from slices.errors import SpecError
from slices.isolation import ISOLATIONS
from slices.model import NodeInfo
from slices.settings import describe, load
from slices.simcluster import sim_capacity, sim_nodes

pytestmark = pytest.mark.timeout(10)
MiB = 1 << 20


class Facts:
    name = "fake"

    def __init__(self, facts: dict[str, str]) -> None:
        self._facts = facts

    def facts(self) -> dict[str, str]:
        return self._facts


def test_the_qemu_section_loads_from_yaml_and_environment(tmp_path: pytest.TempPathFactory) -> None:
    cfg = tmp_path / "agent.yaml"  # type: ignore[operator]
    cfg.write_text("qemu: {accelerator: tcg, boot_timeout: 30}\n")
    s = load(AgentSettings, file=cfg, env={"SLICEMESH_QEMU_MEMORY_OVERHEAD_MIB": "80"})
    assert s.qemu == QemuSettings(accelerator="tcg", boot_timeout=30.0, memory_overhead_mib=80)
    assert s.runc.pids_limit == 512, "the other sections keep their defaults"
    assert "qemu.accelerator" in {name for name, *_ in describe(AgentSettings)}
    with pytest.raises(SpecError, match=r"moved to qemu\.accelerator"):
        load(AgentSettings, env={}, overrides={"vm_accel": "tcg"})
    with pytest.raises(SpecError, match="unknown setting"):
        load(AgentSettings, env={}, overrides={"qemu.tb_size": 64})


def test_facts_of_all_backends_reach_the_node_record() -> None:
    vm = Facts({"vm.accelerator": "tcg (kvm unusable: a kvm guest did not reach userspace within 8 s)", "overhead.vm.memory": str(96 * MiB)})
    ctr = Facts({})
    facts = backend_facts({"container": ctr, "vm": vm})  # type: ignore[dict-item]
    assert facts == vm.facts()
    base = sim_nodes(builtin_catalogue(), 1, "real")[0]
    info = NodeInfo.from_wire({**base, "facts": facts})
    assert info.facts["overhead.vm.memory"] == "100663296"


def test_nodes_table_shows_facts_with_sizes() -> None:
    node = {
        "name": "lab1", "site": "lab", "city": "Princeton", "country": "US", "region": "north-america", "state": "up",
        "backends": {"container": "runc", "vm": "qemu"}, "capacity": {"cpu": 2.0, "memory": 2 << 30}, "allocated": {"cpu": 0.0, "memory": 0},
        "slivers": 0, "facts": {"vm.accelerator": "tcg (kvm unusable: hung)", "overhead.vm.memory": str(96 * MiB), "vm.kernel": "6.1.0-56-cloud-amd64"},
    }  # fmt: skip
    text = render.nodes_text([node, {**node, "name": "sim1", "facts": {}}])
    assert "lab1: overhead.vm.memory 96Mi; vm.accelerator tcg (kvm unusable: hung); vm.kernel 6.1.0-56-cloud-amd64" in text
    assert "sim1:" not in text
    assert "facts" not in render.nodes_text([{**node, "facts": {}}])


def test_a_real_simulated_machine_runs_both_kinds_and_fits_a_vm() -> None:
    assert set(REAL_BACKENDS) == set(ISOLATIONS) and REAL_BACKENDS["vm"] == "qemu"
    node = NodeInfo.from_wire(sim_nodes(builtin_catalogue(), 1, "real")[0])
    assert set(node.offers) == set(ISOLATIONS)
    smallest_vm = 96 * MiB + QemuSettings().memory_overhead_mib * MiB
    assert node.placeable.memory >= 4 * smallest_vm and node.placeable.cpu >= 1.0
    assert sim_capacity("x", "real") == node.capacity
