"""Code bundles fetched from peer agents (docs/code.md, "Fetched from peers"): a real controller
and simulated agents over real sockets, the bundle over real TCP between agents.

A node that holds a bundle sends it to the next nodes that need it, and the controller sends
nothing more; a peer whose copy is corrupt, or that no longer has it, costs a retry from the
controller, never a sliver started on bad code; the controller stops naming that peer.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from node_agent import codefetch
from node_agent.agent import Agent
from slices import bundle
from slices.catalogue import builtin_catalogue
from slices.codeupload import upload
from slices.protocol import CreateSlice, ListNodes, Ping, ShowSlice
from slices.simcluster import sim_nodes
from tests.conftest import AgentsThread, ControllerThread, wait_for

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[tuple[ControllerThread, AgentsThread, bytes]]:
    controller = ControllerThread(tmp_path / "c.db")
    one_per_site = list({n["site"]: n for n in reversed(sim_nodes(builtin_catalogue(), 12, "sim"))}.values())[:4]
    agents = AgentsThread(controller, one_per_site, state_dir=tmp_path / "agents")
    try:
        with controller.client() as c:
            wait_for(lambda: len(c.call(ListNodes()).nodes) == 4, what="registration")
        src = tmp_path / "src"
        src.mkdir()
        (src / "run.sh").write_text("echo hi\n")
        (src / "blob").write_bytes(random.randbytes(1_300_000))  # three chunks from the controller
        yield controller, agents, bundle.pack_dir(src)
    finally:
        agents.stop()
        controller.stop()


def agent(agents: AgentsThread, name: str) -> Agent:
    return next(a for a in agents.agents if a.name == name)


def create_on(c: Any, name: str, node: dict[str, Any], data: bytes) -> list[Any]:
    digest, _ = upload(c, data)
    doc = {
        "name": name,
        "description": "code from a peer",
        "resources": {"cpu": 0.1, "memory": "32Mi"},
        "placement": {"locations": [{"site": node["site"]}]},
        "code": {"digest": digest, "size": len(data), "delivery": "pull"},
    }
    c.call(CreateSlice(spec=doc))
    wait_for(lambda: c.call(ShowSlice(name=name)).state == "running", timeout=60, what=f"{name} running")
    return list(c.call(ShowSlice(name=name)).slivers)


def test_a_holder_sends_the_bundle_and_the_controller_sends_nothing_more(lab: tuple[ControllerThread, AgentsThread, bytes]) -> None:
    controller, agents, data = lab
    n1, n2, n3 = agents.agents[0].info, agents.agents[1].info, agents.agents[2].info
    with controller.client() as c:
        [first] = create_on(c, "seed", {"site": n1.site}, data)
        assert first.code.startswith("pulled from the controller in"), first.code
        digest = bundle.digest(data)
        wait_for(lambda: digest in controller.server.swarm.holders, what="the controller to hear that n1 holds the bundle")
        before = c.call(Ping())
        [second] = create_on(c, "second", {"site": n2.site}, data)
        [third] = create_on(c, "third", {"site": n3.site}, data)
        after = c.call(Ping())
    assert second.code.startswith(f"pulled from peer {n1.name} in"), second.code
    assert third.code.startswith("pulled from peer "), third.code
    assert after.code_bytes_out == before.code_bytes_out  # not one byte more from the controller
    assert after.code_peer_sends - before.code_peer_sends == 2
    for name in (n2.name, n3.name):  # the bytes a sliver sees are the bundle's, unpacked
        tree = agent(agents, name).code.cache.tree(digest)
        assert tree is not None and (tree / "run.sh").read_text() == "echo hi\n"
    assert set(controller.server.swarm.holders[digest]) == {n1.name, n2.name, n3.name}


def test_a_corrupt_or_missing_peer_copy_falls_back_to_the_controller(lab: tuple[ControllerThread, AgentsThread, bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    controller, agents, data = lab
    monkeypatch.setattr(codefetch, "PEER_CONNECT", 1.0)  # a peer that never connects is given up on in 1 s
    n1, n2, n3 = agents.agents[0].info, agents.agents[1].info, agents.agents[2].info
    digest = bundle.digest(data)
    with controller.client() as c:
        create_on(c, "seed", {"site": n1.site}, data)
        wait_for(lambda: n1.name in controller.server.swarm.holders.get(digest, {}), what="n1 holds the bundle")
        held = agent(agents, n1.name).code.cache.bundle(digest)
        assert held is not None
        os.chmod(held, 0o644)
        bad = bytearray(held.read_bytes())
        bad[len(bad) // 2] ^= 0xFF  # bit rot on n1's disk: its stream is whole, its bytes are wrong
        held.write_bytes(bytes(bad))
        before = c.call(Ping())
        [second] = create_on(c, "second", {"site": n2.site}, data)
        # The peer's copy failed its digest: fetched again from the controller, never started on bad bytes.
        assert second.code.startswith("pulled from the controller in") and "2 attempts" in second.code, second.code
        assert c.call(Ping()).code_bytes_out - before.code_bytes_out == len(data)
        assert n1.name not in controller.server.swarm.holders.get(digest, {})  # not asked again
        tree = agent(agents, n2.name).code.cache.tree(digest)
        assert tree is not None and (tree / "blob").stat().st_size == 1_300_000

        # n2 holds it now; its bundle file vanishes (a disk cleaned by hand): n2 says so when asked
        # to send it, n3 waits for it in vain (1 s here), then fetches from the controller.
        wait_for(lambda: n2.name in controller.server.swarm.holders.get(digest, {}), what="n2 holds the bundle")
        gone = agent(agents, n2.name).code.cache.bundle(digest)
        assert gone is not None
        gone.unlink()
        [third] = create_on(c, "third", {"site": n3.site}, data)
        assert third.code.startswith("pulled from the controller in"), third.code
        assert digest not in controller.server.swarm.holders or n2.name not in controller.server.swarm.holders[digest]


def test_a_node_without_peers_fetches_from_the_controller_and_feeds_nobody(lab: tuple[ControllerThread, AgentsThread, bytes]) -> None:
    controller, agents, data = lab
    n1, n4 = agents.agents[0].info, agents.agents[3].info
    agent(agents, n4.name).code.peers = False  # agent setting code_peers: false
    digest = bundle.digest(data)
    with controller.client() as c:
        create_on(c, "seed", {"site": n1.site}, data)
        wait_for(lambda: n1.name in controller.server.swarm.holders.get(digest, {}), what="n1 holds the bundle")
        [fourth] = create_on(c, "fourth", {"site": n4.site}, data)
        assert fourth.code.startswith("pulled from the controller in"), fourth.code
        assert c.call(Ping()).code_peer_sends == 0
    assert list(controller.server.swarm.holders[digest]) == [n1.name]
