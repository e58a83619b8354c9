"""Shared fixtures: a controller and simulated agents over real sockets on random ports."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from controller.server import Server
from controller.settings import ControllerSettings
from node_agent.build import simulated_agents
from node_agent.host import AgentHost
from slices import identity
from slices.catalogue import builtin_catalogue
from slices.client import Client
from slices.codec import decode, encode
from slices.identity import Identity
from slices.model import NodeInfo
from slices.protocol import AddUser, Ok, Register, TrustKeys
from slices.simcluster import sim_nodes
from slices.transport import ClientKeys, Dealer, Keypair, new_keypair
from slices.waiting import wait_until
from tests.clock import Clock


def wait_for(cond: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll ``cond`` until it returns something truthy; fail the test after ``timeout``."""
    return wait_until(cond, timeout, what, max_delay=0.1)


@contextmanager
def hand_run_server(tmp_path: Path, clock: Callable[[], float] = time.time, **settings: Any) -> Iterator[Server]:
    """A controller whose turns the test runs itself (no thread): what is queued when a turn
    starts is known, so the order it is served in is too."""
    s = Server(ControllerSettings(listen="tcp://127.0.0.1:*", db=str(tmp_path / "c.db"), keys_dir=str(tmp_path / "keys"), **settings), clock=clock)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def hand_server(tmp_path: Path) -> Iterator[Server]:
    """``hand_run_server`` on a hand-moved clock (``server.clock``, a ``tests.clock.Clock``)."""
    with hand_run_server(tmp_path, Clock(1_000.0), restart_grace=0.0) as s:
        yield s


def answer(server: Server, d: Dealer) -> Any:
    """Turn the controller until ``d`` has a reply; returns the decoded message."""
    wait_for(lambda: server.turn(0.02) or bool(d.sock.poll(0)), timeout=30, what="a reply")
    return decode(d.sock.recv()).msg


def enrol(server: Server, tmp_path: Path, nodes: list[dict[str, Any]], pairs: dict[str, Keypair] | None = None, *, deltas: bool = False) -> dict[str, Dealer]:
    """Trust a key per node (as the admin; ``pairs``, or new ones) and register each node on
    its own connection (``deltas``: as an agent that takes sets as changes)."""
    admin = identity.read(tmp_path / "keys" / "admin.identity.yaml").keys
    pairs = pairs or {n["name"]: new_keypair() for n in nodes}
    user = Dealer(server.user_url, "admin", admin)
    try:
        user.send(encode(TrustKeys(agents={name: p.public for name, p in pairs.items()}), id="trust", sender="t"))
        assert isinstance(answer(server, user), Ok)
    finally:
        user.close()
    agents = {}
    for n in nodes:
        d = agents[n["name"]] = Dealer(server.url, n["name"], ClientKeys(admin.server, pairs[n["name"]]))
        d.send(encode(Register(node=NodeInfo.from_wire(n), deltas=deltas), id="r", sender=n["name"]))
        assert isinstance(answer(server, d), Ok)
    return agents


class FakeClock:
    """Wall time plus an offset tests can advance (leases, liveness)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


class ControllerThread:
    """A real controller on a random loopback port, in a thread; its keys live beside its db."""

    def __init__(self, db: Path, *, listen: str = "tcp://127.0.0.1:*", period: float = 0.2, clock: Callable[[], float] = time.time, **settings: Any) -> None:
        keys_dir = db.parent / "keys"
        self.settings = ControllerSettings(listen=listen, db=str(db), heartbeat_period=period, liveness_misses=3, lease_check_period=0.05, keys_dir=str(keys_dir), **settings)
        self.server = Server(self.settings, clock=clock)
        self.url = self.server.url  # the agents' socket (and raw wire tests)
        self.user_url = self.server.user_url  # clients: the users' socket, as identity files say
        admin = identity.read(keys_dir / "admin.identity.yaml")
        self.admin = Identity(admin.name, self.user_url, admin.server_key, admin.own, admin.user)
        self.thread = threading.Thread(target=self.server.serve_forever, name="controller", daemon=True)
        self.thread.start()

    @property
    def server_key(self) -> str:
        return self.admin.server_key

    def endpoints(self) -> dict[str, str]:
        """Settings that bind a restarted controller where this one was bound, both sockets
        (the users' port is not always the agents' plus one: a busy host may hold that one)."""
        users = self.user_url if self.server.sockets.users is not None else "off"
        return {"listen": self.url, "user_listen": users}

    def dealer(self, name: str = "test", keys: ClientKeys | None = None) -> Dealer:
        """A raw connection (as the admin unless ``keys``), for tests of the wire itself."""
        return Dealer(self.url, name, keys or self.admin.keys)

    def as_user(self, name: str, *, site: str, role: str = "user", timeout: float = 5.0) -> Client:
        """Add a user (as the admin) and return a client speaking as them."""
        pair = new_keypair()
        with self.client() as c:
            c.call(AddUser(name=name, site=site, role=role, key=pair.public))  # type: ignore[arg-type]
        return Client(self.user_url, identity=Identity(name, self.user_url, self.server_key, pair, name), timeout=timeout)

    def stop(self) -> None:
        self.server.stop()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive()

    def client(self, timeout: float = 5.0) -> Client:
        return Client(self.user_url, identity=self.admin, timeout=timeout)

    def trust(self, keys: dict[str, Keypair]) -> None:
        with self.client() as c:
            c.call(TrustKeys(agents={name: pair.public for name, pair in keys.items()}))


class AgentsThread:
    """Simulated agents in a thread, their keys pre-seeded with the controller."""

    def __init__(self, controller: ControllerThread, nodes: list[dict[str, Any]], *, state_dir: Path | None, period: float = 0.2, trust: bool = True) -> None:
        self.keys = {n["name"]: new_keypair() for n in nodes}
        if trust:
            controller.trust(self.keys)
        self.agents = simulated_agents(nodes, controller.url, server_key=controller.server_key, keys=self.keys, backend="sim", state_dir=state_dir, period=period)
        self.host = AgentHost(self.agents)
        self.thread = threading.Thread(target=self.host.run, name="agents", daemon=True)
        self.thread.start()

    def stop(self, *, goodbye: bool = True) -> None:
        self.host.stop(goodbye=goodbye)
        self.thread.join(timeout=10)
        assert not self.thread.is_alive()

    def crash(self) -> None:
        """Gone as a crash leaves: no goodbye, the controller finds the nodes down."""
        self.stop(goodbye=False)


@pytest.fixture(autouse=True)
def private_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test (and every CLI it starts) keeps identities in its own directory, never in
    the real ~/.config/slicemesh."""
    path = tmp_path / "config"
    monkeypatch.setenv("SLICEMESH_CONFIG_DIR", str(path))
    monkeypatch.delenv("SLICEMESH_IDENTITY", raising=False)
    monkeypatch.delenv("SLICEMESH_CONTROLLER", raising=False)
    return path


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
    agents = AgentsThread(controller, nodes24, state_dir=tmp_path / "agents")
    with controller.client() as c:
        from slices.protocol import ListNodes

        wait_for(lambda: sum(n.state == "up" for n in c.call(ListNodes()).nodes) == len(nodes24), timeout=30, what="24 agents to register")
    yield controller, agents
    if agents.thread.is_alive():
        agents.stop()
