"""An agent takes its desired set as changes to the one it holds (protocol 2.10,
``Desired.base``), and asks for it whole (``Report.resync``) when the changes are based on a
set it does not hold. A real agent over real CURVE sockets; the test is its controller."""

from __future__ import annotations

import pytest

from slices.model import Resources, SliverSpec
from slices.protocol import Beat, Desired, Register, Report
from tests.integration.test_agent_peer_sets import Bed
from tests.integration.test_pulses import answer

pytestmark = pytest.mark.timeout(60)


def spec(sid: str) -> SliverSpec:
    return SliverSpec(id=sid, slice="s", isolation="container", image="busybox", resources=Resources(0.01, 4 << 20))


def test_changes_are_applied_to_the_set_held_and_a_wrong_base_asks_for_it_whole() -> None:
    bed = Bed()
    try:
        assert isinstance(bed.register, Register) and bed.register.deltas, "the agent says it takes changes"
        answer(bed, Register, Beat(generation=0, period=1.0, misses=3, pulses=0, checks_reports=True))
        bed.tell(Desired(generation=1, slivers=[spec("s-a"), spec("s-b")]))
        report = bed.next(Report)
        assert isinstance(report, Report) and report.generation == 1
        bed.tell(Desired(generation=2, base=1, slivers=[spec("s-c")], removed=["s-a"]))
        report = bed.next(Report)
        assert isinstance(report, Report) and report.generation == 2 and not report.resync
        assert sorted(bed.agent.desired) == ["s-b", "s-c"]
        assert sorted(bed.agent.statuses) == ["s-b", "s-c"], "applied: s-a destroyed, s-c made"

        bed.tell(Desired(generation=4, base=3, slivers=[spec("s-d")]))  # based on a set it never had
        report = bed.next(Report)
        assert isinstance(report, Report) and report.resync and report.generation == 2
        assert bed.agent.generation == 2 and sorted(bed.agent.desired) == ["s-b", "s-c"], "nothing applied"
        bed.tell(Desired(generation=4, slivers=[spec("s-d")]))  # whole, as the controller then sends it
        report = bed.next(Report)
        assert isinstance(report, Report) and report.generation == 4 and sorted(bed.agent.desired) == ["s-d"]
    finally:
        bed.close()
