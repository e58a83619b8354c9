"""An agent checks at start that it can really run its backends, and does not offer one that
fails, saying why (``NodeInfo.facts``, shown by ``slicemesh nodes``)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from ctr_helpers import PREFIX

from node_agent.agent import Agent
from node_agent.backends.runc.backend import RuncBackend
from node_agent.build import agent_from_settings
from node_agent.settings import AgentSettings
from slices import render
from slices.errors import SpecError
from slices.settings import load
from slices.transport import new_keypair
from slices.wire import to_wire

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def start_agent(tmp_path: Path, images_dir: Path) -> Iterator[Callable[..., Agent]]:
    made: list[Agent] = []

    def start(runtime: str, backends: str) -> Agent:
        cfg = tmp_path / "agent.yaml"
        cfg.write_text(
            f"name: lab1\nsite: lab\nstate_dir: {tmp_path / 'state'}\ncgroup_prefix: {PREFIX}s\nimages_dir: {images_dir}\n"
            f"subnet: 10.97.{20 + len(made)}.0/24\nbackends: {backends}\nrunc: {{runtime: {runtime}, warm_slots: 0}}\n"
            "location: {city: Princeton, country: US, region: north-america, lat: 40.34, lon: -74.65}\n"
            f"controller_key: '{new_keypair().public}'\n"  # Z85 holds YAML's flow characters, never a quote
        )
        agent = agent_from_settings(load(AgentSettings, file=str(cfg)))
        made.append(agent)
        return agent

    yield start
    for agent in made:
        agent.dealer.close()
        if agent.machine is None:
            agent.close_backends()
            continue
        for backend in {id(b): b for b in agent.backends.values()}.values():
            backend.close()
        agent.machine.forget()  # the bridge and node cgroup too (it closes the machine)


def test_a_working_runc_passes_its_probe(make_backend: Callable[..., RuncBackend], images_dir: Path) -> None:
    backend = make_backend(warm_slots=0)
    dev = images_dir / "busybox" / "dev"
    before = {p.name: p.lstat().st_mtime_ns for p in dev.iterdir()} if dev.is_dir() else {}
    t0 = time.monotonic()
    assert backend.self_check() is None
    assert time.monotonic() - t0 < 5, "a probe container is quick"
    # The probe's /dev is a tmpfs of its own: the shared image is left as it was (runc once
    # rewrote its /dev/ptmx, and two agents probing at once collided there).
    after = {p.name: p.lstat().st_mtime_ns for p in dev.iterdir()} if dev.is_dir() else {}
    assert after == before


@pytest.mark.parametrize(
    ("runtime", "why"),
    [("/nonexistent/runc", "the OCI runtime '/nonexistent/runc' is not an executable here"), ("/bin/false", "could not run a probe container (exit 1)")],
)
def test_a_broken_runtime_is_not_offered_and_the_node_says_why(start_agent: Callable[..., Agent], runtime: str, why: str, caplog: pytest.LogCaptureFixture) -> None:
    agent = start_agent(runtime, "{container: runc, vm: sim}")
    assert agent.info.offers == {"vm": "sim"}, "only what passed its check is offered"
    assert why in agent.info.facts["runc.unusable"]
    assert any("backend runc is not offered" in r.getMessage() and why in r.getMessage() for r in caplog.records)
    view = {**to_wire(agent.info), **to_wire(agent.info.location), "state": "up", "backends": agent.info.offers, "allocated": {"cpu": 0, "memory": 0}, "slivers": 0}
    facts_line = next(line for line in render.nodes_text([view]).splitlines() if line.strip().startswith("lab1: "))
    assert f"runc.unusable {agent.info.facts['runc.unusable']}" in facts_line


def test_a_node_whose_only_backend_fails_refuses_to_start(start_agent: Callable[..., Agent]) -> None:
    with pytest.raises(SpecError, match="no backend of this node passed its start-up check: runc: the OCI runtime '/nonexistent/runc'"):
        start_agent("/nonexistent/runc", "{container: runc}")
    assert not list(Path("/sys/fs/cgroup/memory").glob(f"{PREFIX}s*")), "the node cgroup made before the check is taken back"
