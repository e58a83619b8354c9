"""The heartbeat period and liveness (controller/registry.py), and the agent keys it is
budgeted for (controller/keyring.py)."""

from __future__ import annotations

from pathlib import Path

from controller.keyring import KeyRing
from controller.registry import MAX_STRETCH, Registry
from controller.store import Store
from controller.truststore import TrustStore
from slices.catalogue import builtin_catalogue
from slices.model import NodeInfo
from slices.simcluster import sim_nodes
from slices.transport import new_keypair

NODES = sim_nodes(builtin_catalogue(), 2, "sim")


def node(i: int) -> NodeInfo:
    return NodeInfo.from_wire(NODES[i])


def test_the_period_is_budgeted_for_the_accepted_agents_not_only_those_registered() -> None:
    """The first of 10,000 agents to register is told the period of 10,000, not of 1: it is
    not marked down at 3 s while a host still registers thousands more."""
    reg = Registry(period=1.0, rate=2000.0, misses=3)
    first, _ = reg.register(node(0), b"p", now=100.0)
    assert first.period == 1.0 and reg.period() == 1.0
    reg.expected = 10_000
    second, _ = reg.register(node(1), b"q", now=100.0)
    assert second.period == 5.0 and reg.period() == 5.0
    assert reg.sweep(now=114.0) == [], "within 3 periods of 5 s"
    assert [r.info.name for r in reg.sweep(now=115.5)] == [NODES[0]["name"], NODES[1]["name"]], "silent for over 3 periods"


def test_the_keyring_counts_accepted_agent_keys_only(tmp_path: Path) -> None:
    told: list[int] = []
    ring = KeyRing(TrustStore(Store(str(tmp_path / "c.db"), new_cluster=True)), max_pending=10, unknown_rate=10.0, on_agents=told.append)
    assert told == [0]
    ring.trust_agents({f"n-{i}": new_keypair().public for i in range(3)})
    assert told[-1] == 3
    ring.revoke_agent("n-0", source="test")
    assert told[-1] == 2
    ring.note_pending(new_keypair().public, "n-9", "127.0.0.1")
    assert told[-1] == 2, "a pending key is not a node"


def test_the_period_stretches_while_the_controller_is_behind_and_relaxes_after() -> None:
    """Back-pressure: doubled once the agents' queue has held heartbeats for two periods, at
    most once a period and up to MAX_STRETCH; relaxed by a quarter a period once it empties."""
    reg = Registry(period=1.0, rate=2000.0, misses=3)
    assert not reg.pace(behind=1.5, now=10.0) and reg.period() == 1.0, "a blip stretches nothing"
    assert reg.pace(behind=2.5, now=11.0) and reg.period() == 2.0
    assert not reg.pace(behind=9.0, now=12.0) and reg.period() == 2.0, "once a period: agents learn it from their next reply"
    t = 13.0
    while reg.pace(behind=100.0, now=t):
        t += reg.period()
    assert reg.stretch == MAX_STRETCH and reg.period() == MAX_STRETCH
    assert not reg.pace(behind=1.0, now=t + 100), "not emptied within a tenth of a period (0.8 s), nor behind: held"
    assert reg.pace(behind=0.1, now=t + 100) and reg.period() == MAX_STRETCH * 0.75
    t += 200
    while reg.pace(behind=0.0, now=t):
        t += reg.period()
    assert reg.stretch == 1.0 and reg.period() == 1.0


def test_the_sorted_names_are_kept_until_a_node_joins_or_leaves() -> None:
    """``nodes`` pages over ``Registry.names``: sorted once per join or removal, and never
    stale after one."""
    reg = Registry(period=1.0, rate=2000.0, misses=3)
    a, b = node(1), node(0)
    reg.register(a, b"p", now=1.0)
    first = reg.names()
    assert first == [a.name] and reg.names() is first, "kept while no node joins or leaves"
    reg.register(a, b"p", now=2.0)
    assert reg.names() is first, "a heartbeat or re-registration keeps it"
    reg.register(b, b"q", now=2.0)
    assert reg.names() == sorted([a.name, b.name])
    reg.remove(a.name)
    assert reg.names() == [b.name] and a.name not in reg.nodes
    reg.add(reg.nodes.pop(b.name))
    assert reg.names() == [b.name]


def test_an_answer_shortens_a_nodes_period_by_a_quarter_at_most_and_a_pulse_not_at_all() -> None:
    """A node told 4 s and then 1 s at once may still beat once at 4 s (its answer came late,
    or after it had scheduled the beat): three periods of 1 s would not cover it. Pulses tell
    no period, so the stretch's own quarter steps no longer reach a node one by one."""
    reg = Registry(period=1.0, rate=2000.0, misses=3)
    reg.stretch = 4.0
    rec, _ = reg.register(node(0), b"p", now=100.0)
    assert rec.period == 4.0
    reg.stretch = 1.0  # relaxed while the node pulsed
    reg.seen(rec, b"p", now=104.0, told=False)
    assert rec.period == 4.0, "a pulse is not answered: the node still beats every 4 s"
    told = []
    for k in range(6):
        reg.seen(rec, b"p", now=108.0 + k, told=True)
        told.append(rec.period)
    assert told == [3.0, 2.25, 1.6875, 1.265625, 1.0, 1.0]
    assert reg.sweep(now=113.0 + 2.9) == [], "within 3 periods of the last one told"
