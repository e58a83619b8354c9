"""Shared fixtures: a controller and simulated agents over real sockets on random ports."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from controller.server import Server
from controller.settings import ControllerSettings
from node_agent.build import simulated_agents
from node_agent.host import AgentHost
from slices.catalogue import builtin_catalogue
from slices.client import Client
from slices.simcluster import sim_nodes
from slices.waiting import wait_until


def wait_for(cond: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll ``cond`` until it returns something truthy; fail the test after ``timeout``."""
    return wait_until(cond, timeout, what, max_delay=0.1)


class FakeClock:
    """Wall time plus an offset tests can advance (leases, liveness)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


class ControllerThread:
    def __init__(self, db: Path, *, listen: str = "tcp://127.0.0.1:*", period: float = 0.2, clock: Callable[[], float] = time.time) -> None:
        self.settings = ControllerSettings(listen=listen, db=str(db), heartbeat_period=period, liveness_misses=3, lease_check_period=0.05)
        self.server = Server(self.settings, clock=clock)
        self.url = self.server.url
        self.thread = threading.Thread(target=self.server.serve_forever, name="controller", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.stop()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive()

    def client(self, timeout: float = 5.0) -> Client:
        return Client(self.url, timeout=timeout)


class AgentsThread:
    def __init__(self, url: str, nodes: list[dict[str, Any]], *, state_dir: Path | None, period: float = 0.2) -> None:
        self.agents = simulated_agents(nodes, url, backend="sim", state_dir=state_dir, period=period)
        self.host = AgentHost(self.agents)
        self.thread = threading.Thread(target=self.host.run, name="agents", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.host.stop()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive()


@pytest.fixture
def nodes24() -> list[dict[str, Any]]:
    return sim_nodes(builtin_catalogue(), 24, "sim")


@pytest.fixture
def controller(tmp_path: Path) -> Iterator[ControllerThread]:
    c = ControllerThread(tmp_path / "controller.db")
    yield c
    if c.thread.is_alive():
        c.stop()


@pytest.fixture
def cluster(controller: ControllerThread, nodes24: list[dict[str, Any]], tmp_path: Path) -> Iterator[tuple[ControllerThread, AgentsThread]]:
    agents = AgentsThread(controller.url, nodes24, state_dir=tmp_path / "agents")
    with controller.client() as c:
        from slices.protocol import ListNodes

        wait_for(lambda: sum(n.state == "up" for n in c.call(ListNodes()).nodes) == len(nodes24), timeout=30, what="24 agents to register")
    yield controller, agents
    if agents.thread.is_alive():
        agents.stop()
