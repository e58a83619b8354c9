"""The node's warmer: fills pools after a poke, keeps still while held, survives a failing job."""

from __future__ import annotations

import logging
import threading

import pytest

from node_agent.warmer import Warmer
from tests.conftest import wait_for

pytestmark = pytest.mark.timeout(20)


class Pool:
    def __init__(self, wanted: int) -> None:
        self.wanted, self.items, self.calls = wanted, 0, 0

    def fill_one(self) -> bool:
        self.calls += 1
        if self.items >= self.wanted:
            return False
        self.items += 1
        return True


def test_pools_fill_to_what_they_want_and_refill_after_a_take() -> None:
    w = Warmer("t")
    try:
        a, b = Pool(3), Pool(1)
        w.add(a.fill_one)
        w.add(b.fill_one)
        assert w.wait_idle(10)
        assert (a.items, b.items) == (3, 1)
        a.items -= 2
        w.poke()
        assert w.wait_idle(10)
        assert a.items == 3
    finally:
        w.stop()


def test_nothing_starts_while_held() -> None:
    w = Warmer("t")
    try:
        with w.hold():
            pool = Pool(2)
            w.add(pool.fill_one)
            assert not w.wait_idle(0.2), "held: the poke waits"
            assert pool.calls == 0
        assert w.wait_idle(10) and pool.items == 2
    finally:
        w.stop()


def test_a_failing_job_is_logged_and_not_retried_until_the_next_poke(caplog: pytest.LogCaptureFixture) -> None:
    calls = []

    def broken() -> bool:
        calls.append(1)
        raise OSError("no loop device")

    w = Warmer("t")
    try:
        with caplog.at_level(logging.ERROR):
            w.add(broken)
            assert w.wait_idle(10)
        assert len(calls) == 1 and "no loop device" in caplog.text
        w.poke()
        assert w.wait_idle(10) and len(calls) == 2
    finally:
        w.stop()


def test_remove_waits_for_the_running_job_and_stop_ends_the_thread() -> None:
    started, release = threading.Event(), threading.Event()

    def slow() -> bool:
        started.set()
        release.wait(5)
        return False

    w = Warmer("t")
    w.add(slow)
    assert started.wait(5)
    removed = threading.Event()
    t = threading.Thread(target=lambda: (w.remove(slow), removed.set()))
    t.start()
    assert not removed.wait(0.2), "remove returns only once the job is not running"
    release.set()
    wait_for(removed.is_set, what="remove to return")
    t.join()
    w.stop()
    assert not w._thread.is_alive()
