"""Hostile input over real ZeroMQ/CURVE sockets: the controller and an agent keep serving.

Each daemon runs as its own process (its RSS is its own). The controller is fuzzed by an
accepted user of another site (mallory), an accepted agent key of a node that never
registered (rogue), a key nobody accepted, a second connection holding a genuine agent's key,
a plaintext peer, a peer with the wrong server key and raw TCP garbage; the agent by a
controller that sends garbage (the only peer that can reach an agent at all: it connects out
to the controller's key only). Frames come from ``hostile.Generator``; "captured" frames are
real ones, recorded off the admin's and the agents' sockets during set-up.

Afterwards: the daemon answers a ping, its peak RSS stayed within ``RSS_BOUND`` of what it
was before the fuzz, no traceback is in its log, and nothing it stores changed (every row
of every SQLite table for the controller; every file of its state dir for the agent).

The default run sends ``SHORT`` messages to each; ``-m long`` sends ``LONG``.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from node_agent.build import simulated_agents
from node_agent.host import AgentHost
from slices import identity
from slices.catalogue import builtin_catalogue
from slices.client import Client, RemoteError
from slices.codec import encode, new_id
from slices.identity import Identity
from slices.model import NodeInfo, SliverStatus
from slices.protocol import (
    AcceptKey,
    AddUser,
    CreateSlice,
    DeleteSlice,
    Desired,
    Error,
    ExecOutput,
    ExecSliver,
    Goodbye,
    Heartbeat,
    ListAudit,
    ListKeys,
    ListNodes,
    ListSites,
    ListSlices,
    ListSlivers,
    ListUsers,
    MakeToken,
    NodeAdmin,
    NodeExec,
    NodeLogs,
    Ok,
    Orphans,
    Ping,
    PlanSlice,
    Register,
    RemoveUser,
    RenewSlice,
    Report,
    RevokeKey,
    SetSite,
    ShowSlice,
    SliverLogs,
    TrustKeys,
    WaitSlice,
    build,
)
from slices.simcluster import sim_nodes
from slices.transport import ClientKeys, new_keypair
from tests.conftest import wait_for
from tests.resilience.fuzzrig import FakeController, MiB, Senders, dump_tables, raw_tcp_garbage, start_controller, state_files
from tests.resilience.hostile import Generator

SHORT = 2500
LONG = 10_000
RSS_BOUND = 64 * MiB
#: Warnings about bad frames are logged at 10 a second after a burst of 50 (slices/ratelimit.py):
#: whatever the count, a run of under a minute stays far below this.
LOG_LINES = 1000
SECRET = "fz-not-to-be-seen"
DESCRIPTION = "a slice the fuzz test watches: nothing may change it"

BARRIERS = ("mallory", "rogue", "agent-key")  # accepted keys: a ping is always answered
COUNTS = [pytest.param(SHORT, id="short"), pytest.param(LONG, id="long", marks=pytest.mark.long)]


def spec(name: str, count: int) -> dict[str, Any]:
    return {
        "name": name,
        "description": DESCRIPTION,
        "resources": {"cpu": 0.1, "memory": "64Mi"},
        "placement": {"count": count, "distinct": "none"},
        "env": {"MODE": "probe"},
        "secrets": {"TOKEN": SECRET},
    }


def recording(dealer: Any, into: list[bytes]) -> None:
    """Record every frame ``dealer`` sends from now on (real frames, for replays)."""
    send = dealer.send

    def send_and_keep(payload: bytes) -> bool:
        into.append(payload)
        return bool(send(payload))

    dealer.send = send_and_keep


# ---- the controller ---------------------------------------------------------------------------


class ControllerRig:
    """A controller process with three simulated agents, a running slice, and the fuzz's peers."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.daemon, self.url = start_controller(tmp)
        ident = identity.read(tmp / "keys" / "admin.identity.yaml")
        self.server_key = ident.server_key
        self.admin = Client(self.url, identity=Identity(ident.name, self.url, ident.server_key, ident.own, ident.user), timeout=10)
        self.nodes = sim_nodes(builtin_catalogue(), 3, "sim")
        self.keys = {n["name"]: new_keypair() for n in self.nodes}
        self.rogue, self.mallory = new_keypair(), new_keypair()
        self.admin.call(TrustKeys(agents={**{n: k.public for n, k in self.keys.items()}, "fz-rogue": self.rogue.public}))
        self.admin.call(AddUser(name="mallory", site="evil", role="user", key=self.mallory.public))
        self.captured: list[bytes] = []
        agents = simulated_agents(self.nodes, self.url, server_key=self.server_key, keys=self.keys, backend="sim", state_dir=tmp / "agents", period=1.0)
        for a in agents:
            recording(a.dealer, self.captured)
        self.host = AgentHost(agents)
        self.thread = threading.Thread(target=self.host.run, name="agents", daemon=True)
        self.thread.start()
        wait_for(lambda: sum(n.state == "up" for n in self.admin.call(ListNodes()).nodes) == 3, timeout=30, what="3 agents up")
        recording(self.admin.dealer, self.captured)
        self.admin.call(CreateSlice(spec=spec("fz-web", 2)))
        wait_for(lambda: self.admin.call(ShowSlice(name="fz-web")).state == "running", timeout=30, what="the slice to run")
        for msg in (ListSlices(), ListNodes(), ListSlivers(), ListSites(), ListKeys(), ListUsers(), ListAudit(), Ping(), PlanSlice(spec=spec("fz-plan", 3))):
            self.admin.call(msg)
        for msg in (SliverLogs(slice="fz-web"), ExecSliver(slice="fz-web", argv=["true"]), WaitSlice(name="fz-web", until="settled", timeout=1)):
            with contextlib.suppress(RemoteError):  # the simulated backend keeps no logs and runs nothing
                self.admin.call(msg, retry=False)
        self.slivers = [v.id for v in self.admin.call(ShowSlice(name="fz-web")).slivers]

    def agent_messages(self) -> list[bytes]:
        """Valid agent messages for a real node: what no user key may send."""
        node = self.nodes[0]["name"]
        forged = [SliverStatus(sid, "failed", "forged by the fuzz") for sid in self.slivers]
        msgs = [
            Register(node=NodeInfo.from_wire(self.nodes[0])),
            Heartbeat(node=node, generation=99, slivers=forged),
            Report(node=node, generation=99, slivers=forged),
            Goodbye(node=node),
            ExecOutput(request="x" * 16, stream="stdout", data=b"forged output"),
            Ok(result={"exit_code": 0}),
            Error(code="not-found", reason="forged"),
        ]
        return [encode(m, id=new_id(), sender="fuzz") for m in msgs]

    def user_messages(self) -> list[bytes]:
        """Valid user requests that change something: agents may send none, mallory (a user of
        another site) none of these."""
        node = self.nodes[0]["name"]
        msgs = [
            DeleteSlice(name="fz-web"),
            RenewSlice(name="fz-web", seconds=3600),
            ExecSliver(slice="fz-web", argv=["cat", "/etc/shadow"]),
            SliverLogs(slice="fz-web"),
            AcceptKey(name=node),
            RevokeKey(name=node),
            TrustKeys(agents={"fz-evil": new_keypair().public}),
            AddUser(name="fz-evil", site="evil", role="admin", key=new_keypair().public),
            RemoveUser(name="admin"),
            MakeToken(),
            SetSite(name="evil", max_slices=1000),
            NodeAdmin(name=node, action="drain"),
            Orphans(action="destroy"),
        ]
        return [encode(m, id=new_id(), sender="fuzz") for m in msgs]

    def close(self) -> None:
        self.host.stop()
        self.thread.join(timeout=10)
        self.admin.close()
        self.daemon.stop()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[ControllerRig]:
    r = ControllerRig(tmp_path)
    yield r
    r.close()


def settled(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    """The store once two dumps half a second apart agree (set-up writes have landed)."""
    last: list[dict[str, list[tuple[Any, ...]]]] = [dump_tables(db)]

    def same() -> bool:
        time.sleep(0.5)
        now = dump_tables(db)
        ok = now == last[0]
        last[0] = now
        return ok

    wait_for(same, timeout=15, what="the store to settle")
    return last[0]


@pytest.mark.timeout(600)
@pytest.mark.parametrize("count", COUNTS)
def test_the_controller_survives_hostile_messages(rig: ControllerRig, count: int) -> None:
    keys = {
        "mallory": ClientKeys(rig.server_key, rig.mallory),
        "rogue": ClientKeys(rig.server_key, rig.rogue),
        "unknown": ClientKeys(rig.server_key, new_keypair()),
        "agent-key": ClientKeys(rig.server_key, rig.keys[rig.nodes[0]["name"]]),
    }
    senders = Senders()
    for name, k in keys.items():
        senders.dealer(name, rig.url, k)
    senders.plaintext("plaintext", rig.url)
    senders.plaintext("wrong-server-key", rig.url, server_key=new_keypair().public)
    agent_msgs, user_msgs = rig.agent_messages(), rig.user_messages()
    create = [encode(CreateSlice(spec=spec("fz-evil", 1)), id=new_id(), sender="fuzz")]  # a user's right; no agent's
    cross = {
        "mallory": agent_msgs + user_msgs,
        "unknown": agent_msgs + user_msgs + create,
        "rogue": user_msgs + agent_msgs + create,
        "agent-key": user_msgs + agent_msgs + create,
    }
    gens = {name: Generator(hash(name) % 1000 + count, captured=rig.captured, cross=cross.get(name, []), frame_cap=1 << 20) for name in senders.replies}
    before = settled(rig.tmp / "c.db")
    rig.daemon.watch()
    rng = random.Random(count)
    authenticated = list(keys)
    kinds: dict[str, int] = {}
    sent = 0
    started = time.monotonic()
    try:
        while sent < count:
            # Four in five to a connection the controller accepted; the rest never get past CURVE.
            name = rng.choice(authenticated) if rng.random() < 0.8 else rng.choice(["plaintext", "wrong-server-key"])
            hostile = gens[name].next()
            senders.send(name, hostile.frames)
            kinds[hostile.kind] = kinds.get(hostile.kind, 0) + 1
            sent += name in authenticated
            if sent % 100 == 0 and name in authenticated:
                senders.drain()
                senders.ping(rng.choice(BARRIERS), f"probe-{sent}")  # it serves throughout
        raw_tcp_garbage(
            rig.url, [random.Random(i).randbytes(256) for i in range(20)] + [b"\xff" + b"\x00" * 8 + b"\x7f" + b"\x03\x00" + b"NULL" + b"\x00" * 50]
        )
        fuzz_s = time.monotonic() - started
        for name in BARRIERS:  # each has handled all its connection sent
            senders.ping(name, f"last-{name}")
        time.sleep(0.5)  # replies to the others (plaintext and wrong-key get none: none may come late)
        senders.drain()
    finally:
        senders.close()
    assert rig.daemon.alive()
    assert rig.admin.call(Ping()).principal == "user admin"
    assert {n.name: n.state for n in rig.admin.call(ListNodes()).nodes} == {n["name"]: "up" for n in rig.nodes}, "the genuine agents are never cut off"
    assert rig.admin.call(ShowSlice(name="fz-web")).state == "running"
    growth = rig.daemon.growth()
    print(
        f"controller: {sent} hostile messages in {fuzz_s:.1f} s, kinds {sorted(kinds.items())}, replies {senders.replies}, RSS {rig.daemon.baseline / MiB:.1f} -> peak +{growth / MiB:.1f} MiB"
    )
    assert growth < RSS_BOUND, f"the controller grew by {growth / MiB:.1f} MiB"
    assert senders.replies["plaintext"] == senders.replies["wrong-server-key"] == 0
    after = dump_tables(rig.tmp / "c.db")
    assert {t: (before[t], after.get(t)) for t in before if after.get(t) != before[t]} == {}, "the fuzz changed the store"
    assert rig.daemon.log_problems() == []
    assert SECRET not in rig.daemon.log.read_text(), "a secret value reached the log"
    assert rig.daemon.log_lines() < LOG_LINES, "every bad frame a line: a flood fills the disk"


# ---- an agent ----------------------------------------------------------------------------------


@pytest.mark.timeout(600)
@pytest.mark.parametrize("count", COUNTS)
def test_an_agent_survives_hostile_frames_from_its_controller(tmp_path: Path, count: int) -> None:
    fake = FakeController(tmp_path)
    try:
        fake.wait(lambda: fake.statuses.get(fake.sliver) == "running", "the agent to run its sliver")
        fake.wait(lambda: fake.heartbeats >= 3, "three heartbeats")
        before = state_files(fake.state_dir)
        fake.daemon.watch()
        # Valid, but harmless from a controller: the old and the current desired set (replays),
        # relayed requests for a sliver the node does not hold, an exec the simulated backend
        # refuses; and messages no controller sends (a user's, an agent's).
        node = fake.node["name"]
        msgs = [
            (build(Desired.TYPE, {**fake.desired, "generation": 0}), "g0.0"),
            (build(Desired.TYPE, fake.desired), "g1.0"),
            (NodeExec(sliver="fz-other-0001", argv=["sh", "-c", "echo owned"]), new_id()),
            (NodeLogs(sliver="fz-other-0001"), new_id()),
            (NodeExec(sliver=fake.sliver, argv=["true"]), new_id()),
            (CreateSlice(spec=spec("fz-evil", 1)), new_id()),
            (Ping(), new_id()),
            (Register(node=NodeInfo.from_wire(fake.node)), new_id()),
            (Heartbeat(node=node, generation=5), new_id()),
            (Goodbye(node=node), new_id()),
        ]
        cross = [encode(m, id=i, sender="controller") for m, i in msgs]
        gen = Generator(count, captured=list(fake.captured), cross=cross, frame_cap=16 * MiB)
        sent = 0
        started = time.monotonic()
        while sent < count:
            frames = gen.next().frames
            if fake.instruction(frames[-1]):
                continue
            fake.send_raw(frames)
            sent += 1
            if sent % 100 == 0 or sent == count:
                # A request the agent must answer: it serves throughout, and the fuzz never
                # outruns it (a ROUTER drops what is over a peer's high-water mark).
                probe = f"probe-{sent}"
                fake.send(encode(NodeLogs(sliver=fake.sliver), id=probe, sender="controller"))
                fake.wait(lambda probe=probe: probe in fake.replies, "the agent to answer during the fuzz")  # type: ignore[misc]
        fuzz_s = time.monotonic() - started
        beats = fake.heartbeats
        fake.wait(lambda: fake.heartbeats >= beats + 2, "the agent to go on heartbeating")
        assert fake.statuses.get(fake.sliver) == "running"
        growth = fake.daemon.growth()
        print(f"agent: {sent} hostile messages in {fuzz_s:.1f} s, RSS {fake.daemon.baseline / MiB:.1f} -> peak +{growth / MiB:.1f} MiB")
        assert fake.daemon.alive()
        assert growth < RSS_BOUND, f"the agent grew by {growth / MiB:.1f} MiB"
        assert state_files(fake.state_dir) == before, "the fuzz changed the agent's state"
        assert fake.daemon.log_problems() == []
        assert fake.daemon.log_lines() < LOG_LINES, "every bad frame a line: a flood fills the disk"
        assert SECRET not in fake.daemon.log.read_text(), "a secret value reached the log"
    finally:
        fake.close()


# ---- a peer that never reads ------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_a_peer_that_never_reads_its_replies_costs_a_bounded_queue(tmp_path: Path) -> None:
    """30,000 requests whose replies (~14 KiB each) are never read: the controller keeps at
    most its per-peer send high-water mark (1,000 replies) queued, drops the rest, and serves
    others meanwhile. (Before the high-water mark, 30,000 unread replies grew it from 48 to
    501 MiB.)"""
    import zmq

    daemon, url = start_controller(tmp_path)
    try:
        ident = identity.read(tmp_path / "keys" / "admin.identity.yaml")
        with Client(url, identity=Identity(ident.name, url, ident.server_key, ident.own, ident.user), timeout=10) as admin:
            admin.call(TrustKeys(agents={f"fz-node-{i:03d}": new_keypair().public for i in range(100)}))
            request = encode(ListKeys(), id="never-read", sender="fuzz")
            daemon.watch()
            s = zmq.Context.instance().socket(zmq.DEALER)
            for opt, value in ((zmq.LINGER, 0), (zmq.SNDHWM, 0), (zmq.RCVHWM, 1), (zmq.RCVBUF, 4096)):
                s.setsockopt(opt, value)
            s.curve_serverkey, s.curve_publickey, s.curve_secretkey = ident.server_key.encode(), ident.own.public.encode(), ident.own.secret.encode()
            s.connect(url)
            try:
                for _ in range(30_000):
                    s.send(request)
                cpu = [daemon.ps.cpu_times().user]

                def idle() -> bool:
                    time.sleep(0.5)
                    now = daemon.ps.cpu_times().user
                    quiet, cpu[0] = now - cpu[0] < 0.05, now
                    return quiet

                wait_for(idle, timeout=90, what="the controller to work through the flood")
                assert admin.call(Ping()).principal == "user admin"
                growth = daemon.growth()
                print(f"never-read: RSS {daemon.baseline / MiB:.1f} MiB -> peak +{growth / MiB:.1f} MiB")
                assert growth < RSS_BOUND, f"the controller grew by {growth / MiB:.1f} MiB"
            finally:
                s.close(0)
    finally:
        daemon.stop()
