"""An agent keeps its slices' sliver addresses as the controller tells them (node_agent/agent.py,
node_agent/slicenet.py ``PeerSets``): whole, then changes based on the version it holds. A
change based on another version, or one carried by a set the agent drops unapplied (an older
generation), is not applied, and the agent says which slices to send whole
(``Report.peers_stale``). A real agent over real CURVE sockets; the test is its controller."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from node_agent.agent import Agent
from node_agent.backends.sim import SimBackend
from node_agent.worker import InlineExecutor
from slices.catalogue import builtin_catalogue
from slices.codec import decode, encode
from slices.model import NodeInfo
from slices.protocol import Desired, Message, Peer, PeerChange, Register, Report
from slices.simcluster import sim_nodes
from slices.transport import ClientKeys, Router, new_keypair
from tests.conftest import wait_for

pytestmark = pytest.mark.timeout(60)


class Bed:
    """A Router standing in for the controller, and one agent connected to it."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        server, own = new_keypair(), new_keypair()
        self.router = Router("tcp://127.0.0.1:*", server, lambda key: True)
        info = NodeInfo.from_wire(sim_nodes(builtin_catalogue(), 1, "sim")[0])
        self.agent = Agent(info, {"container": SimBackend()}, self.router.url, state_dir=None, executor=InlineExecutor(), clock=clock, keys=ClientKeys(server.public, own), durable=False)
        self.peer = b""
        self.register = self.next(Register)

    def next(self, kind: type[Message] | tuple[type[Message], ...]) -> Message:
        """Run the agent until it sends a ``kind`` (or one of several); others are passed over."""
        kinds = kind if isinstance(kind, tuple) else (kind,)
        got: list[Message] = []

        def sent() -> bool:
            self.agent.tick()
            self.agent.on_readable()
            while (m := self.router.recv()) is not None:
                self.peer = m[0]
                msg = decode(m[1][0]).msg
                if isinstance(msg, kinds):
                    got.append(msg)
            return bool(got)

        wait_for(sent, timeout=20, what="the agent's " + " or ".join(k.TYPE for k in kinds))
        return got[0]

    def tell(self, msg: Desired) -> None:
        """Send a set and have the agent read it."""
        assert self.router.send(self.peer, encode(msg, id=f"g{msg.generation}", sender="controller"))
        wait_for(lambda: bool(self.agent.dealer.sock.poll(0)), timeout=20, what="the set at the agent")
        self.agent.on_readable()

    def close(self) -> None:
        self.agent.close(goodbye=False)
        self.router.close()


@pytest.fixture
def bed() -> Iterator[Bed]:
    b = Bed()
    yield b
    b.close()


def peer(sid: str, address: str) -> Peer:
    return Peer(sliver=sid, slice="s", address=address)


def held(bed: Bed) -> dict[str, str]:
    return {p.sliver: p.address for p in bed.agent.peers}


def told(generation: int, *changes: PeerChange) -> Desired:
    return Desired(generation=generation, peer_sets=True, peer_slices=["s"], peer_changes=list(changes))


def test_whole_then_changes_and_a_gap_is_asked_for_whole(bed: Bed) -> None:
    bed.tell(told(2, PeerChange(slice="s", base=0, version=10, peers=[peer("s-1", "10.1.0.2"), peer("s-2", "10.2.0.2")])))
    assert held(bed) == {"s-1": "10.1.0.2", "s-2": "10.2.0.2"}
    bed.tell(told(2, PeerChange(slice="s", base=10, version=11, peers=[peer("s-3", "10.3.0.2")], gone=["s-1"])))
    assert held(bed) == {"s-2": "10.2.0.2", "s-3": "10.3.0.2"}
    bed.tell(told(2, PeerChange(slice="s", base=99, version=100, peers=[peer("s-4", "10.4.0.2")])))
    report = bed.next(Report)
    assert isinstance(report, Report) and report.peers_stale == ["s"]
    assert held(bed) == {"s-2": "10.2.0.2", "s-3": "10.3.0.2"}, "not applied on a version it does not hold"
    bed.tell(told(3, PeerChange(slice="s", base=0, version=100, peers=[peer("s-4", "10.4.0.2")])))
    assert held(bed) == {"s-4": "10.4.0.2"}, "the whole set replaces what it held"
    bed.tell(Desired(generation=3, peer_sets=True, peer_slices=[]))
    assert held(bed) == {}, "a slice no longer named is dropped"


def test_changes_in_a_set_dropped_unapplied_are_asked_for_whole(bed: Bed) -> None:
    bed.tell(told(5, PeerChange(slice="s", base=0, version=10, peers=[peer("s-1", "10.1.0.2")])))
    bed.tell(told(4, PeerChange(slice="s", base=10, version=11, peers=[peer("s-2", "10.2.0.2")])))
    report = bed.next(Report)
    assert isinstance(report, Report) and report.peers_stale == ["s"], "an older set is dropped, its changes asked for again"
    assert held(bed) == {"s-1": "10.1.0.2"}
