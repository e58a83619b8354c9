"""``top``'s rows in order (controller/api/nodes.py ``by_slice_and_node``): by slice, then
node, built in steps, the same order one sort of all of them gives."""

from __future__ import annotations

import random
from dataclasses import dataclass

from controller.api.nodes import GROUP_CHUNK, by_slice_and_node
from controller.records import SliverRecord
from controller.steps import complete


@dataclass
class Spec:
    slice: str


@dataclass
class Sliver:
    spec: Spec
    node: str


def test_slivers_come_by_slice_then_node_of_the_seen_slices_only() -> None:
    rng = random.Random(7)
    slivers = [Sliver(Spec(rng.choice("abcd")), f"n{rng.randrange(50):03d}") for _ in range(3 * GROUP_CHUNK + 17)]
    steps = by_slice_and_node(slivers, {"a", "c", "d"})  # type: ignore[arg-type]
    yields = 0
    while True:
        try:
            next(steps)
            yields += 1
        except StopIteration as done:
            got: list[SliverRecord] = done.value
            break
    want = sorted((s for s in slivers if s.spec.slice != "b"), key=lambda s: (s.spec.slice, s.node))
    assert got == want and all(x is y for x, y in zip(got, want, strict=True)), "the same records, in a stable (slice, node) order"
    assert yields >= 3, "grouped over several steps, not in one"


def test_no_slice_seen_gives_no_rows() -> None:
    assert complete(by_slice_and_node([Sliver(Spec("a"), "n1")], set())) == []  # type: ignore[list-item]
