"""What a node's set changed by since the last one it applied (controller/deltas.py)."""

from __future__ import annotations

import dataclasses
import random

from controller.deltas import delta
from slices.model import Resources, SliverSpec


def spec(sid: str, cpu: float = 0.1) -> SliverSpec:
    return SliverSpec(id=sid, slice="s", isolation="container", image="busybox", resources=Resources(cpu, 16 << 20))


def test_unchanged_new_changed_and_gone() -> None:
    a, b, c = spec("s-a"), spec("s-b"), spec("s-c")
    sent = {s.id: s for s in (a, b, c)}
    assert delta(sent, [a, b, c]) == ([], []), "the same objects: nothing to send"
    assert delta(sent, [a, spec("s-b"), c]) == ([], []), "an equal copy is not a change"
    b2, d = spec("s-b", cpu=0.5), spec("s-d")
    assert delta(sent, [a, b2, c, d]) == ([b2, d], [])
    assert delta(sent, [a, d]) == ([d], ["s-b", "s-c"])
    assert delta({}, [a, b]) == ([a, b], [])
    assert delta(sent, []) == ([], ["s-a", "s-b", "s-c"])


def test_applying_the_delta_to_what_was_sent_gives_the_new_set() -> None:
    """As the agent applies it (node_agent/agent.py ``_on_desired``), over random changes."""
    rnd = random.Random(7)
    pool = [spec(f"s-{i}") for i in range(40)]
    held = {s.id: s for s in rnd.sample(pool, 20)}
    for _ in range(300):
        now = [s if rnd.random() < 0.8 else dataclasses.replace(s, resources=Resources(rnd.choice([0.1, 0.2]), 16 << 20)) for s in rnd.sample(pool, rnd.randrange(0, 30))]
        changed, removed = delta(held, now)
        got = dict(held)
        for sid in removed:
            del got[sid]
        got.update((s.id, s) for s in changed)
        assert got == {s.id: s for s in now}
        assert len(set(removed)) == len(removed) and not set(removed) & {s.id for s in now}
        held = {s.id: s for s in now}
