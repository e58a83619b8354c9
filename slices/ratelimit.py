"""Token buckets: how often something a peer can provoke may happen.

Two users: the controller's answers and handshakes for keys it does not know, and warnings
about bad messages. A warning per dropped frame is what an operator needs to see a broken
peer, but a peer that sends garbage as fast as it can must not fill the disk through the
log (the fuzz test sent 10,000 frames in 5 s and got 9,000 lines): past the bucket, warnings
are counted, and the next one that is logged says how many were not.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

#: Warnings about bad messages from peers logged per second (after a burst of ``BURST``).
WARNINGS_PER_S = 10.0
BURST = 50.0


class RateLimit:
    """A token bucket, safe to share between threads (the ZAP authenticator and a loop)."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst, self.clock = rate, burst, clock
        self._tokens, self._last = burst, clock()
        self._lock = threading.Lock()
        self.refused = 0

    def take(self) -> bool:
        with self._lock:
            now = self.clock()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            if self._tokens >= 1:
                self._tokens -= 1
                return True
            self.refused += 1
            return False


class PeerWarnings:
    """``warning()`` for what peers send wrong, at most ``rate`` a second; the rest are counted
    and the next logged warning is preceded by how many were left out."""

    def __init__(self, logger: logging.Logger, rate: float = WARNINGS_PER_S, burst: float = BURST, clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.rate = rate
        self.bucket = RateLimit(rate, burst, clock)
        self.left_out = 0

    def warning(self, msg: str, *args: object) -> None:
        if not self.bucket.take():
            self.left_out += 1
            return
        if self.left_out:
            self.logger.warning("%d more warnings about bad messages were not logged (at most %g a second are)", self.left_out, self.rate, stacklevel=2)
            self.left_out = 0
        self.logger.warning(msg, *args, stacklevel=2)  # the record names the caller, not this module
