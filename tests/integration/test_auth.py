"""Every connection authenticated; who a peer is comes from its key; roles, quotas and audit.

Real controller, real CURVE sockets on loopback, simulated agents.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq

from node_agent.build import simulated_agents
from node_agent.host import AgentHost
from slices.client import Client, RemoteError, Timeout
from slices.codec import decode, encode
from slices.identity import Identity
from slices.model import NodeInfo, SliverStatus
from slices.protocol import (
    AcceptKey,
    CreateSlice,
    DeleteSlice,
    ExecSliver,
    Heartbeat,
    ListAudit,
    ListKeys,
    ListNodes,
    ListSlices,
    ListSlivers,
    MakeToken,
    Ok,
    Ping,
    Register,
    RejectKey,
    RenewSlice,
    RevokeKey,
    SetSite,
    ShowSlice,
)
from slices.transport import ClientKeys, new_keypair
from tests.conftest import AgentsThread, ControllerThread, wait_for

pytestmark = pytest.mark.timeout(90)

DESCRIPTION = "an authorisation test slice with a long enough description"


def doc(name: str, count: int = 1, **extra: Any) -> dict[str, Any]:
    return {"name": name, "description": DESCRIPTION, "resources": {"cpu": 0.1, "memory": "64Mi"}, "placement": {"count": count, "distinct": "none"}, **extra}


def stranger(controller: ControllerThread, *, server_key: str | None = None, timeout: float = 2.0) -> Client:
    ident = Identity("stranger", controller.url, server_key or controller.server_key, new_keypair(), "stranger")
    return Client(controller.url, identity=ident, timeout=timeout, first_try=timeout)


@pytest.fixture
def agents(controller: ControllerThread, nodes24: list[dict[str, Any]], tmp_path: Path) -> Iterator[AgentsThread]:
    a = AgentsThread(controller, nodes24[:6], state_dir=tmp_path / "agents")
    with controller.client() as c:
        wait_for(lambda: sum(n.state == "up" for n in c.call(ListNodes()).nodes) == 6, what="6 agents up")
    yield a
    a.stop()


# ---- the handshake -----------------------------------------------------------------------------


def test_a_plaintext_client_gets_no_answer(controller: ControllerThread) -> None:
    ctx = zmq.Context.instance()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(controller.url)
    try:
        s.send(encode(Ping(), id="p1", sender="plain"))
        assert s.poll(1500) == 0, "a plaintext peer must get nothing"
    finally:
        s.close()
    with controller.client() as c:
        assert c.call(Ping()).principal == "user admin"


def test_a_client_with_the_wrong_server_key_gets_no_answer(controller: ControllerThread) -> None:
    with stranger(controller, server_key=new_keypair().public, timeout=1.5) as c, pytest.raises(Timeout):
        c.call(Ping(), retry=False)


def test_an_unknown_key_is_refused_with_a_reason(controller: ControllerThread) -> None:
    with stranger(controller) as c:
        for msg in (Ping(), ListSlices(), CreateSlice(spec=doc("x"))):
            with pytest.raises(RemoteError) as err:
                c.call(msg)
            assert err.value.code == "unknown-key"
    with controller.client() as c:
        assert c.call(ListSlices()).slices == []


def test_unknown_keys_are_answered_at_a_bounded_rate(tmp_path: Path) -> None:
    controller = ControllerThread(tmp_path / "c.db", unknown_key_rate=5.0)
    try:
        d = controller.dealer("flood", ClientKeys(controller.server_key, new_keypair()))
        for i in range(200):
            d.send(encode(Ping(), id=f"f{i}", sender="flood"))
        replies = 0
        while d.wait(0.5):
            while d.recv() is not None:
                replies += 1
        assert 1 <= replies <= 20, f"{replies} answers to 200 requests from an unknown key"
        d.close()
        with controller.client() as c:
            assert c.call(Ping()).nodes == 0, "the controller serves its users meanwhile"
    finally:
        controller.stop()


# ---- principals: users and agents are different ---------------------------------------------


def test_an_agent_key_cannot_act_as_a_user_and_a_user_key_cannot_act_as_an_agent(controller: ControllerThread, agents: AgentsThread) -> None:
    node = agents.agents[0].name
    agent = Client(controller.url, identity=Identity("a", controller.url, controller.server_key, agents.keys[node]), timeout=3)
    with agent:
        for msg in (CreateSlice(spec=doc("evil")), ListSlices(), DeleteSlice(name="x"), ListKeys()):
            with pytest.raises(RemoteError) as err:
                agent.call(msg)
            assert err.value.code == "forbidden", msg
        assert agent.call(Ping()).principal == f"agent {node}", "ping is for everyone"
    with controller.client() as admin:
        with pytest.raises(RemoteError) as err:
            admin.call(Heartbeat(node=node, generation=0))
        assert err.value.code == "forbidden"
        assert admin.call(ListSlices()).slices == []


def test_an_agent_key_speaks_only_for_its_own_node(controller: ControllerThread, agents: AgentsThread) -> None:
    mine, other = agents.agents[0].name, agents.agents[1].name
    d = controller.dealer("impostor", ClientKeys(controller.server_key, agents.keys[mine]))
    try:
        d.send(encode(Heartbeat(node=other, generation=0, slivers=[SliverStatus("x", "failed", "forged")]), id="h1", sender=other))
        assert d.wait(3)
        env = decode(d.recv() or b"")
        assert env.type == "error" and env.msg.code == "forbidden" and f"node {other!r}" in env.msg.reason  # type: ignore[attr-defined]
    finally:
        d.close()


def test_a_second_connection_for_a_live_node_is_refused_and_the_genuine_agent_is_not_cut_off(
    controller: ControllerThread, agents: AgentsThread, nodes24: list[dict[str, Any]]
) -> None:
    target = agents.agents[0]
    twin = simulated_agents([n for n in nodes24 if n["name"] == target.name], controller.url, server_key=controller.server_key, keys=agents.keys, backend="sim", state_dir=None, period=0.2)
    host = AgentHost(twin)
    import threading

    t = threading.Thread(target=host.run, daemon=True)
    t.start()
    try:
        wait_for(lambda: twin[0].refusal == "conflict", what="the twin refused")
        assert not twin[0].registered
        peer = controller.server.cluster.registry.nodes[target.name].peer
        time.sleep(1.0)  # several heartbeat periods of both trying
        assert controller.server.cluster.registry.nodes[target.name].peer == peer, "the genuine agent keeps its connection"
        assert target.registered and not target.controller_lost
    finally:
        host.stop()
        t.join(timeout=10)


def test_a_forged_relay_reply_from_another_key_is_dropped(controller: ControllerThread, agents: AgentsThread) -> None:
    with controller.client() as c:
        c.call(CreateSlice(spec=doc("probe")))
    d = controller.dealer("forger")
    try:
        d.send(encode(Ok({"exit_code": 0, "node": "x", "sliver": "y"}), id="whatever", sender="x"))
        wait_for(lambda: controller.server.stats.dropped >= 1, what="the forged reply dropped")
    finally:
        d.close()


# ---- enrolment ----------------------------------------------------------------------------------


def one_agent(controller: ControllerThread, nodes: list[dict[str, Any]], **kw: Any) -> tuple[AgentHost, Any, Any]:
    import threading

    keys = {nodes[0]["name"]: new_keypair()}
    agents = simulated_agents(nodes[:1], controller.url, server_key=controller.server_key, keys=keys, backend="sim", state_dir=None, period=0.2)
    for k, v in kw.items():
        setattr(agents[0], k, v)
    host = AgentHost(agents)
    t = threading.Thread(target=host.run, daemon=True)
    t.start()
    return host, t, agents[0]


def test_a_new_key_waits_as_pending_until_accepted(controller: ControllerThread, nodes24: list[dict[str, Any]]) -> None:
    host, t, agent = one_agent(controller, nodes24)
    try:
        with controller.client() as c:
            wait_for(lambda: [(k.name, k.state) for k in c.call(ListKeys()).keys if k.kind == "agent"] == [(agent.name, "pending")], what="pending")
            assert c.call(ListNodes()).nodes == [], "a pending key is not a node"
            assert not agent.registered
            c.call(AcceptKey(name=agent.name))
            wait_for(lambda: agent.registered, what="registered after accept")
            assert [n.name for n in c.call(ListNodes()).nodes] == [agent.name]
            actions = [e.action for e in c.call(ListAudit()).entries]
            assert "key accept" in actions
    finally:
        host.stop()
        t.join(timeout=10)


def test_pending_keys_are_bounded_and_count_for_nothing(tmp_path: Path, nodes24: list[dict[str, Any]]) -> None:
    """At most ``max_pending_keys`` unaccepted keys are kept; none is a node, none stretches the
    heartbeat period (before: 20,000 fake registrations were kept forever, stretched every
    agent's period tenfold and made ``nodes --json`` 12 MB)."""
    controller = ControllerThread(tmp_path / "c.db", max_pending_keys=3)
    try:
        codes = []
        for raw in nodes24[:5]:
            with stranger(controller) as c:
                with pytest.raises(RemoteError) as err:
                    c.call(Register(node=NodeInfo.from_wire(raw)), retry=False)
                codes.append((err.value.code, err.value.reason))
        assert [code for code, _ in codes] == ["pending"] * 3 + ["forbidden"] * 2
        assert "already holds 3 pending keys (max_pending_keys)" in codes[3][1]
        with controller.client() as c:
            assert sum(k.state == "pending" for k in c.call(ListKeys()).keys) == 3
            assert c.call(ListNodes()).nodes == [] and c.call(Ping()).nodes == 0
        assert controller.server.cluster.registry.period() == controller.settings.heartbeat_period
    finally:
        controller.stop()


def test_a_rejected_key_cannot_even_connect(controller: ControllerThread, nodes24: list[dict[str, Any]]) -> None:
    host, t, agent = one_agent(controller, nodes24)
    try:
        with controller.client() as c:
            wait_for(lambda: any(k.state == "pending" for k in c.call(ListKeys()).keys), what="pending")
            c.call(RejectKey(name=agent.name))
        time.sleep(1.0)
        assert not agent.registered
        with controller.client() as c:
            assert c.call(ListNodes()).nodes == []
    finally:
        host.stop()
        t.join(timeout=10)
    pair = next(k for k in controller.server.keyring if k.state == "rejected")
    assert not controller.server.keyring.allow_connection(pair.key)


def test_a_one_time_token_enrols_once(controller: ControllerThread, nodes24: list[dict[str, Any]]) -> None:
    with controller.client() as c:
        token = c.call(MakeToken(node=nodes24[0]["name"], ttl=60)).token
    host, t, agent = one_agent(controller, nodes24, token=token)
    try:
        wait_for(lambda: agent.registered, what="enrolled with the token")
    finally:
        host.stop()
        t.join(timeout=10)
    host, t, again = one_agent(controller, nodes24, token=token)  # a new key for the same node, the same token
    try:
        wait_for(lambda: again.refusal is not None, what="the second use refused")
        assert again.refusal == "conflict" and not again.registered
    finally:
        host.stop()
        t.join(timeout=10)


def test_revoking_an_agent_cuts_it_off_at_once(controller: ControllerThread, agents: AgentsThread) -> None:
    node = agents.agents[0]
    with controller.client() as c:
        c.call(RevokeKey(name=node.name, kind="agent"))
        assert next(n for n in c.call(ListNodes()).nodes if n.name == node.name).state == "down"
        time.sleep(1.0)
        assert next(n for n in c.call(ListNodes()).nodes if n.name == node.name).state == "down", "it stays cut off"


def test_revoking_a_user_cuts_them_off(controller: ControllerThread) -> None:
    with controller.as_user("eve", site="evil") as eve:
        assert eve.call(Ping()).principal == "user eve"
        with controller.client() as admin:
            admin.call(RevokeKey(name="eve", kind="user"))
        with pytest.raises(RemoteError) as err:
            eve.call(ListSlices())
        assert err.value.code == "unknown-key"


# ---- roles --------------------------------------------------------------------------------------


@pytest.fixture
def people(controller: ControllerThread, agents: AgentsThread) -> Iterator[dict[str, Client]]:
    out = {
        "alice": controller.as_user("alice", site="princeton"),
        "bob": controller.as_user("bob", site="princeton"),
        "carol": controller.as_user("carol", site="princeton", role="pi"),
        "dave": controller.as_user("dave", site="mit"),
        "admin": controller.client(),
    }
    yield out
    for c in out.values():
        c.close()


def outcome(c: Client, msg: Any) -> str:
    try:
        c.call(msg)
    except RemoteError as exc:
        return exc.code
    return "ok"


MATRIX = {
    # caller:   (show, renew, exec, delete) of alice's slice
    "alice": ("ok", "ok", "unsupported", "ok"),
    "bob": ("ok", "forbidden", "forbidden", "forbidden"),
    "carol": ("ok", "ok", "unsupported", "ok"),
    "dave": ("not-found", "not-found", "not-found", "not-found"),
    "admin": ("ok", "ok", "unsupported", "ok"),
}


@pytest.mark.parametrize("caller", sorted(MATRIX))
def test_authorisation_matrix(people: dict[str, Client], caller: str) -> None:
    """Role x action x owner: sim slivers refuse exec (`unsupported`) only once it is allowed."""
    people["alice"].call(CreateSlice(spec=doc("alices", env={"MODE": "probe"}, secrets={"TOKEN": "s3cret"})))
    c = people[caller]
    want = MATRIX[caller]
    got = (
        outcome(c, ShowSlice(name="alices")),
        outcome(c, RenewSlice(name="alices", seconds=3600)),
        outcome(c, ExecSliver(slice="alices", argv=["true"], timeout=2)),
        outcome(c, DeleteSlice(name="alices")),
    )
    assert got == want


def test_what_each_role_sees(people: dict[str, Client]) -> None:
    people["alice"].call(CreateSlice(spec=doc("alices", env={"MODE": "probe"}, secrets={"TOKEN": "s3cret"})))
    people["dave"].call(CreateSlice(spec=doc("daves")))
    names = {who: sorted(s.name for s in c.call(ListSlices()).slices) for who, c in people.items()}
    assert names == {"alice": ["alices"], "bob": ["alices"], "carol": ["alices"], "dave": ["daves"], "admin": ["alices", "daves"]}
    assert {s.slice for s in people["dave"].call(ListSlivers()).slivers} == {"daves"}
    own = people["alice"].call(ShowSlice(name="alices"))
    other = people["bob"].call(ShowSlice(name="alices"))
    assert own.spec["env"] == {"MODE": "probe"} and own.spec["secrets"] == {"TOKEN": "(hidden)"}
    assert other.spec["env"] == {"MODE": "(hidden)"} and other.spec["secrets"] == {"TOKEN": "(hidden)"}
    assert own.owner == "alice" and own.site == "princeton"


def test_owner_is_the_caller_not_a_field(people: dict[str, Client]) -> None:
    with pytest.raises(RemoteError) as err:
        people["alice"].call(CreateSlice(spec=doc("forged", owner="bob")))
    assert err.value.code == "forbidden"
    made = people["carol"].call(CreateSlice(spec=doc("for-bob", owner="bob")))  # a PI for a user of her site
    assert made.owner == "bob"
    with pytest.raises(RemoteError) as err:
        people["carol"].call(CreateSlice(spec=doc("for-dave", owner="dave")))
    assert err.value.code == "forbidden"


# ---- quotas -------------------------------------------------------------------------------------


def test_site_quotas_name_the_rule_and_the_numbers(people: dict[str, Client]) -> None:
    admin, alice = people["admin"], people["alice"]
    admin.call(SetSite(name="princeton", max_slices=2, max_slivers=3, max_cpu=0.25))
    alice.call(CreateSlice(spec=doc("q1", count=2)))
    with pytest.raises(RemoteError) as err:
        alice.call(CreateSlice(spec=doc("q2", count=2)))
    assert err.value.code == "quota" and err.value.reason == "site princeton: 2 of 3 slivers used; this slice's 2 would make 4"
    with pytest.raises(RemoteError) as err:
        alice.call(CreateSlice(spec={**doc("q3"), "resources": {"cpu": 0.1, "memory": "64Mi"}}))
    assert err.value.reason == "site princeton: 0.2 of 0.25 cores used; this slice's 0.1 would make 0.3"
    admin.call(SetSite(name="princeton", max_cpu=0))
    alice.call(CreateSlice(spec=doc("q4")))
    with pytest.raises(RemoteError) as err:
        alice.call(CreateSlice(spec=doc("q5")))
    assert err.value.reason == "site princeton: 2 of 2 slices used; this slice would make 3"
    admin.call(SetSite(name="princeton", max_slices=0, max_slivers=0, max_nodes_per_slice=2))
    with pytest.raises(RemoteError) as err:
        alice.call(CreateSlice(spec=doc("q6", count=3)))
    assert "at most 2 slivers (max_nodes_per_slice); this one asks for 3" in err.value.reason
    assert sorted(s.name for s in alice.call(ListSlices()).slices) == ["q1", "q4"], "refusals change nothing"
    admin.call(CreateSlice(spec=doc("admins", count=3)))  # admins are not bound by site quotas


def test_renewal_needs_a_real_description(people: dict[str, Client]) -> None:
    people["alice"].call(CreateSlice(spec={**doc("terse"), "description": "test"}))
    with pytest.raises(RemoteError) as err:
        people["alice"].call(RenewSlice(name="terse", seconds=3600))
    assert "description has 4 characters" in err.value.reason


def test_every_change_is_audited_with_its_key(people: dict[str, Client], controller: ControllerThread) -> None:
    people["alice"].call(CreateSlice(spec=doc("audited")))
    people["alice"].call(RenewSlice(name="audited", seconds=3600))
    people["carol"].call(DeleteSlice(name="audited"))
    entries = people["admin"].call(ListAudit(limit=100)).entries
    rows = [(e.who, e.action, e.target) for e in entries]
    assert ("user alice", "create", "slice audited") in rows
    assert ("user alice", "renew", "slice audited") in rows
    assert ("user carol", "delete", "slice audited") in rows
    assert ("user admin", "user add", "user alice") in rows
    alice_key = next(k for k in controller.server.keyring if k.name == "alice").fingerprint
    assert all(e.key == alice_key for e in entries if e.who == "user alice")
    assert {e.who for e in people["alice"].call(ListAudit()).entries} == {"user alice"}, "users see their own entries"


def test_the_wire_cannot_claim_an_owner_or_sender(controller: ControllerThread) -> None:
    """The envelope's ``from`` and an ``owner`` in the body change nothing: the key decides."""
    with controller.as_user("mallory", site="evil") as m:
        pass
    pair = next(p for p in controller.server.keyring if p.name == "mallory")
    assert pair.role == "user"
    raw = msgpack.packb({"v": "2.0", "type": "list_keys", "id": "k1", "from": "admin", "ts": 1.0, "body": {}}, use_bin_type=True)
    d = controller.dealer("mallory", ClientKeys(controller.server_key, m.ident.own))
    try:
        d.send(raw)
        assert d.wait(3)
        env = decode(d.recv() or b"")
        assert env.type == "error" and env.msg.code == "forbidden"  # type: ignore[attr-defined]
    finally:
        d.close()
