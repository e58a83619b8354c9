"""node_agent/reporting.py: only changes are sent, bounded, and usage rotates."""

from __future__ import annotations

import dataclasses

from node_agent.reporting import Reporter
from slices.codec import encode
from slices.model import SliverStatus, Usage
from slices.protocol import Heartbeat


def statuses(n: int, state: str = "running") -> dict[str, SliverStatus]:
    """As the agent holds them: usage apart (``usages``)."""
    return {f"s{i:05d}": SliverStatus(f"s{i:05d}", state, None) for i in range(n)}


def usages(now: dict[str, SliverStatus]) -> dict[str, Usage]:
    """Each running sliver's usage, as the agent last measured it."""
    return {sid: Usage(cpu_seconds=1.0, memory=1 << 20, pids=3) for sid, st in now.items() if st.state == "running"}


def test_only_changes_are_sent_once_acknowledged() -> None:
    r = Reporter(usage_per_beat=0)
    now = statuses(10)
    first = r.pick(now, usages(now))
    assert len(first) == 10
    r.acknowledge(first)
    assert r.pick(now, usages(now)) == []
    now["s00003"] = SliverStatus("s00003", "failed", "oom-killed")
    again = r.pick(now, usages(now))
    assert [s.id for s in again] == ["s00003"] and again[0].state == "failed"
    assert r.pick(now, usages(now)) == again, "sent until acknowledged"
    r.acknowledge(again)
    assert r.pick(now, usages(now)) == []
    r.reset()
    assert len(r.pick(now, usages(now))) == 10, "after a registration everything is new"


def test_a_node_with_ten_thousand_slivers_stays_far_below_the_frame_cap() -> None:
    r = Reporter()
    now = statuses(10_000)
    sizes = []
    for _ in range(25):
        picked = r.pick(now, usages(now))
        sizes.append(len(encode(Heartbeat(node="n1", generation=1, slivers=picked), id="x", sender="n1")))
        r.acknowledge(picked)
    assert max(sizes) < 300 * 1024, sizes
    assert sizes[-1] < 100 * 1024, "once acknowledged, only the usage share rides along"


def test_usage_visits_every_running_sliver_in_turn() -> None:
    r = Reporter(usage_per_beat=3, usage_every=1)
    now = statuses(7)
    r.acknowledge(r.pick(now, usages(now)))
    seen: list[str] = []
    for _ in range(5):
        seen += [s.id for s in r.pick(now, usages(now)) if s.usage is not None]
    assert set(seen) == set(now) and len(seen) == 15


def test_changes_carry_no_stale_usage_outside_their_turn() -> None:
    r = Reporter(usage_per_beat=1, usage_every=1)
    now = {sid: dataclasses.replace(st, usage=Usage(cpu_seconds=9.0)) for sid, st in statuses(4).items()}  # a stale usage in each status
    picked = r.pick(now, usages(now))
    assert sum(s.usage is not None for s in picked) == 1
    assert all(dataclasses.replace(s, usage=None) == dataclasses.replace(now[s.id], usage=None) for s in picked)


def test_gone_slivers_are_forgotten() -> None:
    r = Reporter()
    now = statuses(3)
    r.acknowledge(r.pick(now, usages(now)))
    del now["s00001"]
    r.pick(now, usages(now))
    assert "s00001" not in r.acked


def test_usage_is_sampled_each_sliver_once_per_usage_every_beats() -> None:
    r = Reporter(usage_every=5)
    now = statuses(10)
    r.acknowledge(r.pick(now, usages(now)))
    rounds = [[s.id for s in r.pick(now, usages(now)) if s.usage is not None] for _ in range(5)]
    assert all(len(ids) == 2 for ids in rounds), rounds
    assert sorted(i for ids in rounds for i in ids) == sorted(now), "every sliver once in five heartbeats"
    single = Reporter(usage_every=5)
    one = statuses(1)
    single.acknowledge(single.pick(one, usages(one)))
    assert [s.usage is not None for s in single.pick(one, usages(one))] == [True], "a lone sliver's usage still rides every heartbeat"


def test_a_report_carries_changes_without_usage() -> None:
    r = Reporter()
    now = statuses(4)
    first = r.pick(now, usages(now), usage=False)
    assert len(first) == 4 and all(s.usage is None for s in first)
    r.acknowledge(first)
    assert r.pick(now, usages(now), usage=False) == [], "nothing changed: an empty report"
    assert any(s.usage is not None for s in r.pick(now, usages(now))), "the heartbeat still samples usage"


def test_every_status_is_sent_again_in_a_periodic_full_report() -> None:
    r = Reporter(usage_per_beat=0, full_every=10, max_statuses=4)
    now = statuses(6)
    for _ in range(2):  # everything, the cap at a time, until acknowledged
        r.acknowledge(r.pick(now, usages(now)))
    sent = [len(r.pick(now, usages(now))) for _ in range(7)]  # heartbeats 3-9: nothing changed, nothing sent
    assert sent == [0] * 7
    full = r.pick(now, usages(now))  # the 10th heartbeat
    r.acknowledge(full)
    rest = r.pick(now, usages(now))
    r.acknowledge(rest)
    assert (len(full), len(rest)) == (4, 2) and {s.id for s in full + rest} == set(now), "all of them again, bounded per message"
    assert r.pick(now, usages(now)) == []
    assert all(r.pick(now, usages(now), usage=False) == [] for _ in range(30)), "reports after a reconcile do not count as heartbeats"


def test_usage_kept_apart_rides_on_the_share_whose_turn_it_is() -> None:
    """The agent keeps usage apart from the statuses (measured at every look, sent for a
    share): a status outside the turn goes as it is, not copied."""
    r = Reporter(usage_per_beat=2, usage_every=1)
    now = statuses(4)
    measured = {sid: Usage(cpu_seconds=float(i)) for i, sid in enumerate(now) if sid != "s00003"}  # s00003: not measured
    r.acknowledge(r.pick(now, measured))
    picked = r.pick(now, measured)  # the first pick's turn was s00000 and s00001
    assert [(s.id, s.usage) for s in picked] == [("s00000", measured["s00000"]), ("s00002", measured["s00002"])]
    picked = r.pick(now, measured)
    assert [(s.id, s.usage) for s in picked] == [("s00001", measured["s00001"]), ("s00002", measured["s00002"])]
    now["s00001"] = SliverStatus("s00001", "failed", "oom-killed")
    changed = r.pick(now, measured, usage=False)
    assert changed == [now["s00001"]] and changed[0] is now["s00001"], "a report: changes only, as they are"
