"""Stepped replies (controller/steps.py): chunks, fairness, the time budget, one finish each."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

from controller.steps import MAX_RETRIES, Job, Steps, chunked, complete


def counting(n: int, log: list[str], name: str) -> Generator[None, None, str]:
    for i in range(n):
        log.append(f"{name}{i}")
        yield
    return f"{name} done"


def job(name: str, steps: Generator[None, None, Any], key: str = "k") -> Job:
    return Job(peer=name.encode(), msg_id=name, key=key, type_name="list_nodes", who=name, mutating=False, steps=steps)


class Clock:
    """Advances by ``tick`` each time it is read: each step 'costs' one tick."""

    def __init__(self, tick: float) -> None:
        self.now, self.tick = 0.0, tick

    def __call__(self) -> float:
        self.now += self.tick
        return self.now


def test_chunked_yields_every_chunk_and_leaves_out_vanished_items() -> None:
    gen = chunked(range(10), lambda i: None if i == 3 else i * 2, chunk=4)
    yields = 0
    while True:
        try:
            next(gen)
            yields += 1
        except StopIteration as done:
            assert done.value == [0, 2, 4, 8, 10, 12, 14, 16, 18]
            break
    assert yields == 2  # after items 4 and 8


def test_complete_runs_a_stepped_computation_to_its_value() -> None:
    log: list[str] = []
    assert complete(counting(3, log, "a")) == "a done" and log == ["a0", "a1", "a2"]


def test_jobs_run_round_robin_under_the_budget_and_finish_once() -> None:
    finished: list[tuple[str, Any, BaseException | None]] = []
    log: list[str] = []
    steps = Steps(lambda j, r, e: finished.append((j.msg_id, r, e)), clock=Clock(1.0))
    steps.start(job("a", counting(5, log, "a")))
    steps.start(job("b", counting(2, log, "b")))
    steps.run(budget=2.5)  # the first job uses the budget; the second still gets one step
    assert log == ["a0", "a1", "a2", "b0"] and finished == []  # clock reads 2, 3, 4 >= 3.5
    while steps:
        steps.run(budget=2.5)
    assert sorted(f[0] for f in finished) == ["a", "b"]
    assert {f[0]: f[1] for f in finished} == {"a": "a done", "b": "b done"}
    assert all(f[2] is None for f in finished) and not steps.inflight


def test_a_failing_job_finishes_with_its_error_and_the_others_go_on() -> None:
    finished: dict[str, Any] = {}

    def broken() -> Generator[None, None, str]:
        yield
        raise ValueError("boom")

    steps = Steps(lambda j, r, e: finished.setdefault(j.msg_id, e or r), clock=Clock(0.0))
    steps.start(job("bad", broken()))
    steps.start(job("good", counting(1, [], "g")))
    while steps:
        steps.run(budget=1.0)
    assert isinstance(finished["bad"], ValueError) and finished["good"] == "g done"


def test_a_retry_of_a_request_in_progress_joins_it_up_to_a_bound() -> None:
    finished: list[Job] = []
    steps = Steps(lambda j, r, e: finished.append(j), clock=Clock(1.0))
    steps.start(job("a", counting(3, [], "a"), key="alice"))
    assert not steps.retried("bob", "a", b"other")  # another key's request of the same id: not a retry
    for i in range(MAX_RETRIES + 5):
        assert steps.retried("alice", "a", f"peer{i}".encode())
    while steps:
        steps.run(budget=10.0)
    assert len(finished) == 1 and len(finished[0].retries) == MAX_RETRIES
    assert not steps.retried("alice", "a", b"late")  # done: a later retry is the server's to answer


@pytest.mark.parametrize("budget", [0.0, 100.0])
def test_every_job_finishes_whatever_the_budget(budget: float) -> None:
    done: list[str] = []
    steps = Steps(lambda j, r, e: done.append(r), clock=Clock(1.0))
    for name in "xyz":
        steps.start(job(name, counting(4, [], name)))
    turns = 0
    while steps:
        steps.run(budget)
        turns += 1
        assert turns < 100
    assert sorted(done) == ["x done", "y done", "z done"]
