"""The order of a host's ticks (node_agent/ticks.py): heartbeats before registrations, and
registrations a bounded slice at a time, on a hand-moved clock."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from node_agent.ticks import Ticks

pytestmark = pytest.mark.timeout(30)

PERIOD = 5.0
REGISTER_COST = 0.006  # seconds one registration took a loaded simulation host here
BEAT_COST = 0.0002
RETRY = 0.5  # an agent's first registration retry


@dataclass
class World:
    """Agents on one host: a registration is answered ``reply_after`` seconds later (at once
    if 0; until then it is tried again every ``RETRY`` s); a registered agent's tick is a
    heartbeat, due a period after its last. ``sent`` keeps each agent's messages' times."""

    size: int
    reply_after: float = 0.0
    now: float = 0.0
    replies: list[tuple[float, int]] = field(default_factory=list)
    registered: set[int] = field(default_factory=set)
    due: dict[int, float] = field(default_factory=dict)
    sent: dict[int, list[float]] = field(default_factory=dict)
    ticked: list[int] = field(default_factory=list)

    def tick(self, i: int) -> float:
        self.ticked.append(i)
        self.sent.setdefault(i, []).append(self.now)
        if i in self.registered:
            self.now += BEAT_COST
        else:
            self.now += REGISTER_COST
            if not self.reply_after:
                self.registered.add(i)
            elif all(j != i for _, j in self.replies):
                self.replies.append((self.now + self.reply_after, i))
                self.due[i] = self.now + RETRY
                return self.due[i]
        self.due[i] = self.now + PERIOD
        return self.due[i]

    def timer(self) -> float:
        return self.now

    def ticks(self, slice: float) -> Ticks:
        t = Ticks(self.tick, lambda i: i in self.registered, slice=slice, timer=self.timer)
        for i in range(self.size):
            t.add(0.0, i)
        return t

    def run(self, t: Ticks, until: float) -> None:
        """The host's loop: a look at what is due, then a wait for messages (none come)."""
        while self.now < until:
            t.run(self.now)
            self.now += t.wait(self.now, 0.5)
            for at, i in [r for r in self.replies if r[0] <= self.now]:
                self.replies.remove((at, i))
                self.registered.add(i)
                self.due[i] = self.now + PERIOD / 2
                t.answered(i, lambda i=i: self.due[i])

    def longest_silence(self, until: float) -> float:
        """The longest time any registered agent went without sending, up to ``until``."""
        return max(b - a for times in self.sent.values() for a, b in zip(times, [*times[1:], until], strict=True))


def test_heartbeats_keep_their_period_while_thousands_register() -> None:
    """A simulation host's start: 2,500 agents register at once, 15 s of registering. The
    first to register must still beat every period, not wait 15 s behind the others
    (three periods: its node marked down). The old order, all in deadline order, did."""
    world = World(2500)
    world.run(world.ticks(slice=0.05), until=40.0)
    assert world.registered == set(range(2500))
    assert world.longest_silence(until=40.0) <= PERIOD + 0.1  # a slice late at most, and the beats due with it

    old = World(2500)
    old.run(old.ticks(slice=float("inf")), until=40.0)
    assert old.longest_silence(until=40.0) > 2.5 * PERIOD  # what this order guards against


def test_an_agent_answered_while_waiting_to_retry_beats_on_time() -> None:
    """The controller answers each registration a second later, so every agent is waiting
    in the line to register again when its answer comes: it must leave the line and beat
    on time, not when the line (2,500 registrations, 15 s) reaches it."""
    world = World(2500, reply_after=1.0)
    t = world.ticks(slice=0.05)
    world.run(t, until=40.0)
    assert world.registered == set(range(2500))
    assert world.longest_silence(until=40.0) <= PERIOD + 0.1
    assert len(t) == 2500


def test_registrations_take_a_slice_of_each_look_and_heartbeats_go_first() -> None:
    world = World(100)
    t = world.ticks(slice=0.05)
    world.registered.add(99)  # agent 99 is registered: its tick is a heartbeat
    t.run(0.0)
    assert world.ticked[0] == 99
    assert len(world.ticked) == 1 + 9  # 9 registrations of 6 ms reach the 50 ms slice
    assert t.wait(world.now, 0.5) == 0.0  # registrations wait: no sleeping
    t.run(world.now, register=False)  # a look between messages: heartbeats only
    assert len(world.ticked) == 10
    world.run(t, until=2.0)
    assert world.registered == set(range(100))
    assert sorted(world.ticked[:100]) == list(range(100))  # each registered once, oldest first
    assert world.ticked[1:100] == list(range(99))
    assert 0.0 < t.wait(world.now, 0.5) <= 0.5


def test_a_dropped_agent_never_ticks_again() -> None:
    world = World(20)
    t = world.ticks(slice=0.02)
    t.run(0.0)  # 4 registered, 16 wait in line
    assert len(world.registered) == 4
    t.drop(10)  # waiting in line
    t.drop(0)  # registered, in the heap
    world.run(t, until=12.0)
    assert 10 not in world.ticked and world.ticked.count(0) == 1
    assert world.registered == set(range(20)) - {10}
    assert len(t) == 18


def test_rekey_leaves_waiting_registrations_in_line() -> None:
    """A small host re-keys every deadline each turn; an agent waiting in the line of
    registrations must not also be put back in the heap (it would register twice)."""
    world = World(10)
    t = world.ticks(slice=0.01)
    t.run(0.0)  # 2 registered, 8 in line
    t.rekey((0.0 if i not in world.registered else world.due[i], i) for i in range(10))
    assert len(t) == 10
    world.run(t, until=1.0)
    assert sorted(world.ticked) == list(range(10))
