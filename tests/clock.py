"""A clock a test sets by hand: ``clock.now = 5.0``; called, it says the time it was set to."""

from __future__ import annotations


class Clock:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
