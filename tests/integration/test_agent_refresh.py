"""A heartbeat looks at every sliver again (status and usage: ``Agent._refresh``) unless a
reconcile did within half a period; and usage is measured at least every ``USAGE_EVERY``
periods however many reconciles come. A real agent over real CURVE sockets on a hand-set
clock; the test is its controller."""

from __future__ import annotations

import pytest

from node_agent.reporting import USAGE_EVERY
from slices.model import Resources, SliverSpec
from slices.protocol import Beat, Desired, Register, Report
from tests.clock import Clock
from tests.integration.test_agent_peer_sets import Bed
from tests.integration.test_pulses import answer

pytestmark = pytest.mark.timeout(60)


def spec(sid: str) -> SliverSpec:
    return SliverSpec(id=sid, slice="s", isolation="container", image="busybox", resources=Resources(0.01, 4 << 20))


def beat(bed: Bed, clock: Clock, at: float) -> None:
    """The agent's heartbeat at ``at``."""
    clock.now = at
    bed.agent.next_beat = at
    bed.agent.tick()


def test_a_heartbeat_skips_the_look_a_reconcile_just_made_but_measures_usage_in_time() -> None:
    clock = Clock(100.0)
    bed = Bed(clock)
    try:
        assert isinstance(bed.register, Register)
        t0 = clock.now = 101.0  # its registration is sent again (backoff), then answered
        answer(bed, Register, Beat(generation=0, period=1.0, misses=3, pulses=0, checks_reports=True))
        bed.tell(Desired(generation=1, slivers=[spec("s-a"), spec("s-b")]))
        assert isinstance(bed.next(Report), Report)
        assert bed.agent.looked == t0, "the reconcile looked at every sliver"

        beat(bed, clock, t0 + 0.2)
        assert bed.agent.measured == t0 + 0.2, "usage never measured: this heartbeat measures it, though a reconcile just looked"
        assert set(bed.agent.usages) == {"s-a", "s-b"}

        gen = 1
        for k in range(1, 5 * USAGE_EVERY):  # a change every 0.3 s, a heartbeat each second
            at = t0 + 0.2 + 0.3 * k
            gen += 1
            clock.now = at
            bed.tell(Desired(generation=gen, base=gen - 1, slivers=[spec(f"s-{k}")]))
            assert bed.agent.looked == at
            if k % 3 == 0:
                before = bed.agent.measured
                beat(bed, clock, at + 0.1)
                due = at + 0.1 - before >= USAGE_EVERY
                assert bed.agent.measured == (at + 0.1 if due else before), f"at {at + 0.1:.1f}: measured {'now' if due else 'not'}"
        assert bed.agent.measured > t0 + 0.2, "measured again within USAGE_EVERY periods, reconciles notwithstanding"

        clock.now = bed.agent.looked + 0.6
        beat(bed, clock, clock.now)
        assert bed.agent.measured == clock.now and bed.agent.looked == clock.now, "no reconcile for over half a period: the heartbeat looks"
    finally:
        bed.close()
