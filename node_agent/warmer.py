"""One background thread per node that keeps pools of ready-made sliver parts full.

A sliver's start-up should cost runc's own time and little else, so what every sliver needs
and does not depend on its spec is made ahead: a netns + veth (netdev.py), a copied and
mounted disk with its bundle directory and a started supervisor (backends/runc/). Each pool
registers a *job* that makes one item and returns True, or returns False when its pool is
full; the thread runs the jobs round-robin (so the pools fill evenly) after each ``poke``.

The warm-up competes with a start-up for the same two cores and the same GIL, so it never
starts a job while a start-up ``hold``s it. Exceptions of a job are logged, and the job is
not retried until the next poke: a pool that cannot be filled leaves slivers on the slower,
cold path, never without one.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator

log = logging.getLogger(__name__)

Job = Callable[[], bool]


class Warmer:
    def __init__(self, name: str) -> None:
        self._cond = threading.Condition()
        self._jobs: list[Job] = []
        self._holds = 0
        self._generation = 0  # bumped by every poke; a round that made nothing settles only if unchanged
        self._pending = False
        self._current: Job | None = None
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"warm-{name}", daemon=True)
        self._thread.start()

    def add(self, job: Job) -> None:
        with self._cond:
            self._jobs.append(job)
        self.poke()

    def remove(self, job: Job) -> None:
        """Stop running ``job``; returns once it is not running (its pool may then be emptied)."""
        with self._cond:
            if job in self._jobs:
                self._jobs.remove(job)
            while self._current is not None and self._current == job:
                self._cond.wait()

    def poke(self) -> None:
        """Something was taken from a pool: fill them again once nobody holds the warmer."""
        with self._cond:
            self._generation += 1
            self._pending = True
            self._cond.notify_all()

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """No job starts inside this block (a sliver's start-up runs here)."""
        with self._cond:
            self._holds += 1
        try:
            yield
        finally:
            with self._cond:
                self._holds -= 1
                self._cond.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """True once every pool is full (or cannot be filled); for benchmarks and tests."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._pending or self._current is not None:
                left = deadline - time.monotonic()
                if left <= 0 or self._stopping:
                    return False
                self._cond.wait(left)
            return True

    def stop(self) -> None:
        """Finish the running job, then end the thread (idempotent)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and (self._holds or not self._pending):
                    self._cond.wait()
                if self._stopping:
                    return
                generation, jobs = self._generation, list(self._jobs)
            made = False
            interrupted = False
            for job in jobs:
                with self._cond:
                    if self._holds or self._stopping or job not in self._jobs:
                        interrupted = True
                        break
                    self._current = job
                try:
                    made = bool(job()) or made
                except Exception:
                    log.exception("warming up %s failed; slivers start cold until the next try", getattr(job, "__qualname__", job))
                finally:
                    with self._cond:
                        self._current = None
                        self._cond.notify_all()
            with self._cond:
                if not made and not interrupted and generation == self._generation:
                    self._pending = False
                    self._cond.notify_all()
