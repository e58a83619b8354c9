"""Sliver addresses told as changes, over the controller's real sockets (controller/peers.py):
two agents of the test's own register, a slice lands on both, each reports its sliver's
address, and each node is told the slice's addresses whole once, then only what changed; an
agent that says it missed a change (``Report.peers_stale``) is told the slice whole again.
The controller's turns are run by the test, so what each push holds is known."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from controller.server import Server
from slices import identity
from slices.codec import decode, encode
from slices.model import SliverStatus
from slices.protocol import CreateSlice, Desired, Ok, PeerChange, Report
from slices.transport import Dealer
from tests.conftest import answer, enrol, wait_for

pytestmark = pytest.mark.timeout(90)


def next_desired(server: Server, d: Dealer) -> Desired:
    """Turn the controller until ``d`` is sent a desired set; other messages are skipped. The
    set is then acknowledged as applied, as an agent does: the controller sends a node its next
    set only once its last one is applied (``Cluster.hold``)."""
    got: list[Desired] = []

    def arrived() -> bool:
        server.turn(0.02)
        while d.sock.poll(0):
            msg = decode(d.sock.recv()).msg
            if isinstance(msg, Desired):
                got.append(msg)
        return bool(got)

    wait_for(arrived, timeout=30, what="a desired set")
    assert len(got) == 1, f"one push per change, got {len(got)}"
    d.send(encode(Report(node=d.identity, generation=got[0].generation), id=f"applied-{got[0].generation}", sender=d.identity))
    return got[0]


def change_of(msg: Desired) -> PeerChange:
    assert msg.peer_sets and msg.peer_slices == ["net"] and len(msg.peer_changes) == 1, msg
    return msg.peer_changes[0]


def test_addresses_are_told_whole_once_then_as_changes(hand_server: Server, tmp_path: Path, nodes24: list[dict[str, Any]]) -> None:
    server = hand_server
    cities = {n["location"]["city"]: n for n in nodes24}  # one node per city: the default spread
    nodes = [{**n, "images": ["busybox"]} for n in list(cities.values())[:2]]
    agents = enrol(server, tmp_path, nodes)
    for d in agents.values():  # what a node that just registered is sent: nothing yet
        assert next_desired(server, d).peer_slices == []
    admin = identity.read(tmp_path / "keys" / "admin.identity.yaml").keys
    user = Dealer(server.user_url, "admin", admin)
    try:
        doc = {"name": "net", "description": "d", "resources": {"cpu": 0.1, "memory": "16Mi"}, "placement": {"count": 2}}
        user.send(encode(CreateSlice(spec=doc), id="c1", sender="t"))
        reply = answer(server, user)
        assert isinstance(reply, Ok), reply
        where = {v["node"]: v["id"] for v in reply.result["slivers"]}
        assert set(where) == {n["name"] for n in nodes}
        first = {name: next_desired(server, d) for name, d in agents.items()}
        for msg in first.values():
            assert msg.peer_sets and msg.peer_slices == ["net"] and msg.peer_changes == [], "no address known yet: nothing to tell"
        version: dict[str, int | None] = dict.fromkeys(first)

        addresses = {name: f"10.77.{i}.2" for i, name in enumerate(agents)}
        for name, d in agents.items():  # each agent in turn: its sliver runs, at its address
            d.send(encode(Report(node=name, generation=first[name].generation, slivers=[SliverStatus(where[name], "running", address=addresses[name])]), id=f"r-{name}", sender=name))
            for other, od in agents.items():
                ch = change_of(next_desired(server, od))
                assert ch.base == (version[other] or 0), "a change, based on what that node holds (the first: whole)"
                assert [(p.sliver, p.address) for p in ch.peers] == [(where[name], addresses[name])] and ch.gone == []
                version[other] = ch.version

        a = next(iter(agents))
        agents[a].send(encode(Report(node=a, generation=first[a].generation, peers_stale=["net"]), id="stale", sender=a))
        for _ in range(5):  # an agent that asks again and again (its last push was just now) ...
            agents[a].send(encode(Report(node=a, generation=first[a].generation, peers_stale=["net"]), id="stale", sender=a))
            server.turn(0.02)
        assert not agents[a].sock.poll(0), "... is not sent a whole set per ask"
        server.clock.now += server.cluster.registry.nodes[a].period  # a period on: the sweep sends it
        whole = change_of(next_desired(server, agents[a]))
        assert whole.base == 0 and sorted((p.sliver, p.address) for p in whole.peers) == sorted((where[n], addresses[n]) for n in agents)
    finally:
        user.close()
        for d in agents.values():
            d.close()
