"""Where backend work runs: inline for the accounting-only backend, in a worker thread for
real ones (runc and QEMU calls block for tens of milliseconds), with results handed back to
the agent's loop through a waker file descriptor so all agent state stays on one thread.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from slices.transport import Waker

log = logging.getLogger(__name__)

Done = Callable[[Any, BaseException | None], None]


class InlineExecutor:
    def submit(self, fn: Callable[[], Any], done: Done) -> None:
        try:
            result = fn()
        except Exception as exc:  # handed to the callback, never lost
            done(None, exc)
            return
        done(result, None)

    def post(self, callback: Callable[[], None]) -> None:
        callback()

    def drain(self) -> None:
        pass

    @property
    def fd(self) -> int | None:
        return None

    def close(self) -> None:
        pass


class ThreadExecutor:
    """One worker thread, FIFO: backend calls for a node never run concurrently."""

    def __init__(self, name: str = "backend") -> None:
        self._tasks: queue.Queue[tuple[Callable[[], Any], Done] | None] = queue.Queue()
        self._results: queue.Queue[tuple[Done, Any, BaseException | None]] = queue.Queue()
        self._waker = Waker()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def fd(self) -> int | None:
        return self._waker.fd

    def submit(self, fn: Callable[[], Any], done: Done) -> None:
        self._tasks.put((fn, done))

    def post(self, callback: Callable[[], None]) -> None:
        """From any thread: run ``callback`` on the loop thread at its next drain."""
        self._results.put((lambda _r, _e: callback(), None, None))
        self._waker.wake()

    def _run(self) -> None:
        while (task := self._tasks.get()) is not None:
            fn, done = task
            try:
                self._results.put((done, fn(), None))
            except Exception as exc:
                self._results.put((done, None, exc))
            self._waker.wake()

    def drain(self) -> None:
        """Run finished tasks' callbacks; call from the loop thread."""
        self._waker.clear()
        while True:
            try:
                done, result, exc = self._results.get_nowait()
            except queue.Empty:
                return
            done(result, exc)

    def close(self) -> None:
        self._tasks.put(None)
        self._thread.join(timeout=30)
        self._waker.close()
