"""The controller's figure of how long the users' socket went unread (controller/userwaits.py)."""

from __future__ import annotations

import pytest

from controller.userwaits import UserWaits

pytestmark = pytest.mark.timeout(10)


def test_a_busy_stretch_between_two_looks_is_kept() -> None:
    w = UserWaits(window=60.0, floor=0.01)
    w.watching(100.0)
    w.looked(100.001)  # straight after poll: the loop's rhythm, not kept
    w.looked(100.301)  # a handler ran 300 ms in between
    w.looked(100.321)  # 20 ms: kept, under the slow mark
    assert w.worst(100.4) == pytest.approx(0.3)
    assert w.over(100.4) == 1
    assert w.over(100.4, limit=0.01) == 2


def test_time_blocked_in_poll_is_not_a_wait() -> None:
    w = UserWaits(window=60.0, floor=0.01)
    w.looked(10.0)
    w.watching(15.0)  # idle in poll for 5 s: a user's request would have woken it
    w.looked(15.002)
    assert w.worst(15.1) == 0.0 and w.over(15.1) == 0


def test_the_first_look_has_nothing_to_measure_from() -> None:
    w = UserWaits()
    w.looked(5.0)
    assert w.worst(5.0) == 0.0


def test_stretches_older_than_the_window_are_forgotten() -> None:
    w = UserWaits(window=60.0, floor=0.01)
    w.watching(0.0)
    w.looked(0.5)  # 500 ms, ended at t=0.5
    w.looked(30.0)  # 29.5 s after the last look, with no poll in between: kept too
    assert w.worst(31.0) == pytest.approx(29.5)
    assert w.worst(89.0) == pytest.approx(29.5)  # the 0.5 s one ended 88.5 s ago; 29.5 s one 59 s ago
    assert w.over(89.0) == 1
    assert w.worst(91.0) == 0.0 and w.over(91.0) == 0


def test_memory_is_bounded_by_the_window() -> None:
    w = UserWaits(window=1.0, floor=0.01)
    t = 0.0
    for _ in range(10_000):
        t += 0.02
        w.looked(t)
    assert len(w._kept) <= 1.0 / 0.02 + 1
    assert w.over(t, limit=0.015) == len(w._kept)
