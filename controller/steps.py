"""Requests whose replies are built in steps, a few milliseconds per loop turn.

The controller has one loop (heartbeats, pings, creates). A reply that lists 10,000 nodes or
shows a 10,000-sliver slice costs a few hundred milliseconds of Python; built in one go it
would hold every other request and heartbeat that long. Such a handler returns a generator
instead of its reply: each ``next`` builds a bounded chunk (``CHUNK`` rows) and yields, and
the generator's return value is the reply. The loop runs the queued generators round-robin
for at most ``budget`` seconds per turn, after it has served the messages that arrived, so a
ping waits at most about one budget behind any number of big views.

Consistency: a view reads the live records at each step, not a copy taken up front (a copy of
10,000 records is itself the stall this avoids). Each row is consistent; rows of one reply
may be a few turns apart, like ``ps`` output. A record gone between steps is left out.

Pure of I/O: ``Steps`` hands each finished job to ``finish`` (the server replies).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from slices.codec import Packed

T = TypeVar("T")
U = TypeVar("U")

#: A handler's stepped reply: yields between chunks, returns the reply record.
Stepped = Generator[None, None, Any]

MAX_RETRIES = 16  # retries of one request answered while its reply is being built
CHUNK = 250  # rows built per step: ~1-3 ms of Python per step


def chunked(items: Iterable[T], view: Callable[[T], U | None], chunk: int = CHUNK, *, pack: bool = False) -> Generator[None, None, list[U]]:
    """``view`` of every item, yielding after each ``chunk`` items; a ``None`` view (its
    record went away between steps) is left out. ``pack``: each view is packed for the wire
    as it is made (``codec.Packed``, which then stands for the list: for a reply only), so no
    step at the end packs all of them at once."""
    out: list[U] = cast("list[U]", Packed()) if pack else []
    for i, item in enumerate(items, 1):
        v = view(item)
        if v is not None:
            out.append(v)
        if i % chunk == 0:
            yield
    return out


def complete(gen: Generator[None, None, T]) -> T:
    """Run a stepped computation to its end at once (for callers that need the value now)."""
    while True:
        try:
            next(gen)
        except StopIteration as done:
            result: T = done.value
            return result


@dataclass
class Job:
    """One request being answered in steps."""

    peer: bytes
    msg_id: str
    key: str
    type_name: str
    who: str
    mutating: bool
    steps: Stepped | None = None  # None: its reply was built at once
    retries: list[bytes] = field(default_factory=list)  # connections that sent the same request again
    started: float = field(default_factory=time.monotonic)


class Steps:
    """The queue of stepped replies, run fairly (round-robin) under a per-turn time budget."""

    def __init__(self, finish: Callable[[Job, Any, BaseException | None], None], *, clock: Callable[[], float] = time.monotonic) -> None:
        self.finish = finish  # (job, result, error): called exactly once per job
        self.clock = clock
        self.jobs: deque[Job] = deque()
        self.inflight: dict[tuple[str, str], Job] = {}  # (key, request id) -> its job

    def __len__(self) -> int:
        return len(self.jobs)

    def __iter__(self) -> Iterator[Job]:
        return iter(self.jobs)

    def start(self, job: Job, *, first_now: bool = False) -> None:
        """Queue ``job``; ``first_now``: run its first step now (a change begins in the turn
        it arrived in, and a small one ends there: only a big one is queued)."""
        if first_now and not self._step(job):
            return
        self.jobs.append(job)
        self.inflight[(job.key, job.msg_id)] = job

    def retried(self, key: str, msg_id: str, peer: bytes) -> bool:
        """A retry of a request still being answered: it gets the same reply when it is done."""
        job = self.inflight.get((key, msg_id))
        if job is None:
            return False
        if len(job.retries) < MAX_RETRIES:
            job.retries.append(peer)  # past the bound a retry is dropped (a flood, not a client)
        return True

    def run(self, budget: float, *, between: Callable[[], None] | None = None) -> None:
        """Step the jobs round-robin until each has had a step and ``budget`` seconds passed
        (one step of each at least, so no job starves behind a busy turn). ``between`` runs
        after every step (the server serves its users' socket there); a job it starts waits
        for the next run."""
        deadline = self.clock() + budget
        for _ in range(len(self.jobs)):
            job = self.jobs.popleft()
            while self._step(job, between):
                if self.clock() >= deadline:
                    self.jobs.append(job)  # more to do: its turn comes again
                    break

    def _step(self, job: Job, after: Callable[[], None] | None = None) -> bool:
        """One step of ``job``, then ``after``; False once the job is done, and finished (its
        one reply, from its value or from what either raised)."""
        result: Any = None
        error: BaseException | None = None
        assert job.steps is not None  # only stepped jobs are started
        try:
            next(job.steps)
            if after is not None:
                after()
            return True
        except StopIteration as done:
            result = done.value
        except Exception as exc:  # the server turns it into the one reply
            error = exc
        self.inflight.pop((job.key, job.msg_id), None)
        self.finish(job, result, error)
        return False
