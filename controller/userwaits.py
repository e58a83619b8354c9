"""How long the users' socket went unread while the loop was busy: the controller's own figure
of what a ping waits for.

The loop reads the users' socket first in every turn and again between the phases of a turn
(server.py); what it does between two such looks (a request's handler, a batch of agents'
messages, a push, a step of a big view) is how long a user request that arrived just after
the first look waits. Time blocked in ``poll`` does not count: a user request would wake it.

Pure: the server passes ``time.perf_counter()`` values in. Only stretches of at least
``floor`` are kept, for ``window`` seconds, so the memory is bounded (window / floor entries).
"""

from __future__ import annotations

from collections import deque

WINDOW = 60.0  # seconds of history `ping` reports on
FLOOR = 0.010  # shorter stretches are the loop's normal rhythm: not kept
SLOW = 0.050  # what `ping` counts as a user kept waiting


class UserWaits:
    def __init__(self, window: float = WINDOW, floor: float = FLOOR) -> None:
        self.window, self.floor = window, floor
        self._since: float | None = None  # when the socket was last looked at (or watched)
        self._kept: deque[tuple[float, float]] = deque()  # (when it ended, how long)

    def watching(self, now: float) -> None:
        """The loop was blocked in ``poll`` until ``now``: nothing waited meanwhile."""
        self._since = now

    def looked(self, now: float) -> None:
        """The loop looks at the users' socket at ``now``."""
        if self._since is not None and now - self._since >= self.floor:
            self._kept.append((now, now - self._since))
        self._since = now
        self._drop_old(now)

    def worst(self, now: float) -> float:
        """The longest stretch, in seconds, that ended within the last ``window``."""
        self._drop_old(now)
        return max((span for _, span in self._kept), default=0.0)

    def over(self, now: float, limit: float = SLOW) -> int:
        """How many stretches longer than ``limit`` ended within the last ``window``."""
        self._drop_old(now)
        return sum(1 for _, span in self._kept if span > limit)

    def _drop_old(self, now: float) -> None:
        while self._kept and self._kept[0][0] < now - self.window:
            self._kept.popleft()
