"""When each agent of a host ticks, and in what order: heartbeats before registrations.

A host's agents tick by deadline (a heap). A registered agent's tick is a heartbeat, owed to
the controller by a deadline of its own: three missed periods and its node is marked down.
An unregistered agent's tick is a registration, which can wait. At a simulation host's start
all its 2,500 agents register at once; run in deadline order, that was 15 s of registering
in one go on this machine, during which no heartbeat left and no reply was read, and the
first nodes to register were marked down (bench responsiveness). So registrations wait in a
line of their own and take at most ``slice`` seconds of each look; heartbeats due meanwhile
go first. Pure: the host says how to tick an agent and whether it is registered.
"""

from __future__ import annotations

import heapq
import time
from collections import deque
from collections.abc import Callable, Iterable

REGISTER_SLICE = 0.05  # seconds of registrations per look at what is due


class Ticks:
    def __init__(
        self,
        tick: Callable[[int], float | None],
        registered: Callable[[int], bool],
        *,
        slice: float = REGISTER_SLICE,
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        """``tick(i)`` runs agent ``i``'s tick and returns when its next one is due (None: it
        is gone); ``registered(i)``: whether its tick would be a heartbeat."""
        self._tick = tick
        self._registered = registered
        self.slice = slice
        self._timer = timer
        self._heap: list[tuple[float, int]] = []
        self._line: deque[int] = deque()  # due registrations, oldest first (and some no longer: see ``_lined``)
        self._lined: set[int] = set()  # who waits in the line

    def __len__(self) -> int:
        return len(self._heap) + len(self._lined)

    def add(self, due: float, i: int) -> None:
        heapq.heappush(self._heap, (due, i))

    def drop(self, i: int) -> None:
        """Agent ``i`` is gone: never ticked again."""
        self._heap = [(due, j) for due, j in self._heap if j != i]
        heapq.heapify(self._heap)
        self._lined.discard(i)  # its place in the line is skipped

    def answered(self, i: int, due: Callable[[], float]) -> None:
        """Agent ``i`` may have just become registered (a reply was read): if it waits in
        the line of registrations, its next tick is a heartbeat due at ``due()`` and must
        not wait for the line (2,500 registrations: 15 s, and its node marked down).
        ``due`` is asked only then: this runs at every read of every agent's socket."""
        if i in self._lined and self._registered(i):
            self._lined.discard(i)
            heapq.heappush(self._heap, (due(), i))

    def rekey(self, dues: Iterable[tuple[float, int]]) -> None:
        """Every agent's deadline anew (a reply may have moved one earlier); those waiting in
        the line of registrations stay there."""
        self._heap = [(due, i) for due, i in dues if i not in self._lined]
        heapq.heapify(self._heap)

    def wait(self, now: float, longest: float) -> float:
        """How long the host may wait for messages before the next tick is due."""
        if self._lined:
            return 0.0
        if not self._heap:
            return longest
        return min(longest, max(0.0, self._heap[0][0] - now))

    def run(self, now: float, *, register: bool = True) -> None:
        """Tick every due heartbeat; then, if ``register``, due registrations for at most
        ``slice`` seconds (the rest at the next look)."""
        while self._heap and self._heap[0][0] <= now:
            _, i = heapq.heappop(self._heap)
            if self._registered(i):
                self._run(i)
            elif i not in self._lined:
                self._line.append(i)
                self._lined.add(i)
        if not register or not self._lined:
            return
        started = self._timer()
        while self._line:
            i = self._line.popleft()
            if i not in self._lined:
                continue  # dropped, or answered meanwhile
            self._lined.discard(i)
            self._run(i)
            if self._timer() - started >= self.slice:
                return

    def _run(self, i: int) -> None:
        due = self._tick(i)
        if due is not None:
            heapq.heappush(self._heap, (due, i))
