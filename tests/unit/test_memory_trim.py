"""The controller returns freed memory after bursts, not on every turn (slices/memory.py)."""

from __future__ import annotations

import os

import pytest

from slices import memory
from slices.memory import Trimmer
from tests.clock import Clock

pytestmark = pytest.mark.timeout(30)


def trimmer(interval: float = 10.0, burst: int = 1000) -> tuple[Trimmer, Clock, list[float]]:
    clock, calls = Clock(100.0), []

    def release() -> bool:
        calls.append(clock.now)
        return True

    return Trimmer(interval, burst, release=release, clock=clock), clock, calls


def test_trims_once_a_burst_was_handled() -> None:
    t, _clock, calls = trimmer()
    assert not t.maybe_trim(999)
    assert t.maybe_trim(1000)
    assert calls == [100.0]


def test_at_most_once_per_interval_however_busy() -> None:
    t, clock, calls = trimmer()
    assert t.maybe_trim(5000)
    clock.now += 9.9
    assert not t.maybe_trim(50_000)
    clock.now += 0.1
    assert t.maybe_trim(50_000)
    assert calls == [100.0, 110.0]


def test_a_quiet_controller_is_not_trimmed_again() -> None:
    t, clock, calls = trimmer()
    assert t.maybe_trim(1500)
    clock.now += 3600
    assert not t.maybe_trim(2000)  # 500 messages since: no burst
    assert calls == [100.0]


def test_interval_zero_never_trims() -> None:
    t, _clock, calls = trimmer(interval=0)
    assert not t.maybe_trim(10**9)
    assert calls == []


def test_glibc_calls_run_here() -> None:
    """This machine runs glibc: both knobs reach it (and a bad value is refused, not applied)."""
    assert memory.release_free_memory() in (True, False)  # 1 if it released pages, 0 if none
    assert memory.limit_arenas(0) is False  # 0 means glibc's default: nothing set
    assert memory.limit_arenas(8 * (os.cpu_count() or 1)) is True  # glibc's own default on 64-bit: no change to this process



def test_full_collections_run_on_the_loops_timer_only() -> None:
    import gc

    from slices.memory import NEVER, Collector

    clock = Clock(100.0)
    before = gc.get_threshold()
    c = Collector(300.0, clock=clock)
    try:
        c.take_over()
        assert gc.get_threshold() == (before[0], before[1], NEVER), "young generations as before, no automatic full collection"
        assert not c.maybe_collect()
        clock.now += 299
        assert not c.maybe_collect()
        clock.now += 2
        assert c.maybe_collect() and not c.maybe_collect(), "once per interval"
    finally:
        gc.set_threshold(*before)
    off = Collector(0.0, clock=clock)
    off.take_over()
    assert gc.get_threshold() == before and not off.maybe_collect(), "0: Python's own schedule"


def test_the_collector_is_paused_for_a_decode_and_left_as_it_was() -> None:
    import gc

    from slices.memory import collector_paused

    assert gc.isenabled()
    with pytest.raises(ValueError), collector_paused():
        assert not gc.isenabled()
        raise ValueError("a malformed reply")
    assert gc.isenabled(), "back on after an error too"
    gc.disable()
    try:
        with collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled(), "a process that runs without the collector stays so"
    finally:
        gc.enable()


class _Cyclic:
    other: object = None


def _collections_during(call: object) -> list[int]:
    """The generations collected while ``call`` ran (gc's own callbacks say)."""
    import gc

    seen: list[int] = []

    def cb(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            seen.append(info["generation"])

    gc.callbacks.append(cb)
    try:
        call()  # type: ignore[operator]
    finally:
        gc.callbacks.remove(cb)
    return seen


def test_the_loop_collects_the_young_generations_where_it_chooses() -> None:
    import weakref

    from slices.memory import Collector

    a, b = _Cyclic(), _Cyclic()
    a.other, b.other = b, a  # garbage only the cyclic collector frees
    freed: list[int] = []
    ref = weakref.ref(a, lambda _: freed.append(1))
    del a, b
    assert _collections_during(Collector(300.0).young) == [1], "the two young generations, not a full collection"
    assert freed and ref() is None, "a cycle made since the last look is freed at the look"
    assert _collections_during(Collector(0.0).young) == [], "0: Python's own schedule, nothing added"
