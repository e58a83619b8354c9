"""Waits that are told, not polled: ``create --wait``, ``delete --wait``, ``show --watch``.

A ``wait_slice`` request is parked here and answered when its slice changes past what the
client has seen, settles, or is gone from every node, or at its deadline; while it waits,
``wait_progress`` notices (at most ``PROGRESS_PER_S`` a second) say how far it got. Parked
waits cost nothing while nothing changes: the loop hands over the names of the slices that
changed in a turn, and only their waiters are looked at.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from slices.codec import encode
from slices.errors import SliceMeshError
from slices.protocol import Ok, Progress, WaitProgress
from slices.wire import to_wire

log = logging.getLogger(__name__)

MAX_WAITS = 10_000
MAX_WAITS_PER_KEY = 100
PROGRESS_PER_S = 10.0


@dataclass
class Waiter:
    peer: bytes
    id: str
    key: str  # the waiting principal's key: its waits are bounded
    name: str
    until: str
    seen: int
    deadline: float
    last: tuple[str, int] = ("", -1)  # (state, running) last reported
    last_at: float = 0.0


Send = Callable[[bytes, bytes], bool]


class Waits:
    def __init__(self, send: Send, sender: str, clock: Callable[[], float]) -> None:
        self.send = send
        self.sender = sender
        self.clock = clock
        self.by_slice: dict[str, list[Waiter]] = defaultdict(list)
        self.count = 0
        self.per_key: dict[str, int] = defaultdict(int)

    def done(self, w: Waiter, p: Progress) -> bool:
        """Whether ``w`` is answered by progress ``p``."""
        if w.until == "change":
            return p.version > w.seen
        if w.until == "deleted":
            return p.state == "deleted"
        return p.settled

    def park(self, w: Waiter, now_progress: Progress) -> bool:
        """Answer at once if already done (True); else park it (False)."""
        if self.done(w, now_progress):
            self._answer(w, now_progress)
            return True
        if self.count >= MAX_WAITS or self.per_key[w.key] >= MAX_WAITS_PER_KEY:
            raise SliceMeshError(f"too many waits in progress (at most {MAX_WAITS_PER_KEY} per user); try again later", code="forbidden")
        self.by_slice[w.name].append(w)
        self.count += 1
        self.per_key[w.key] += 1
        w.last, w.last_at = (now_progress.state, now_progress.running), self.clock()
        return False

    def _answer(self, w: Waiter, p: Progress) -> None:
        self.send(w.peer, encode(Ok(to_wire(p)), id=w.id, sender=self.sender))

    def _drop(self, name: str, w: Waiter) -> None:
        self.by_slice[name].remove(w)
        if not self.by_slice[name]:
            del self.by_slice[name]
        self.count -= 1
        self.per_key[w.key] -= 1

    def changed(self, names: Iterable[str], progress: Callable[[str], Progress]) -> None:
        """Slices ``names`` changed this turn: answer or tell their waiters."""
        now = self.clock()
        for name in names:
            waiters = self.by_slice.get(name)
            if not waiters:
                continue
            p = progress(name)
            for w in list(waiters):
                if self.done(w, p):
                    self._drop(name, w)
                    self._answer(w, p)
                elif (p.state, p.running) != w.last and now - w.last_at >= 1 / PROGRESS_PER_S:
                    w.last, w.last_at = (p.state, p.running), now
                    self.send(w.peer, encode(WaitProgress(request=w.id, progress=p), id=w.id, sender=self.sender))

    def expire(self, now: float, progress: Callable[[str], Progress]) -> None:
        """Answer the waits whose deadline passed with where their slice stands."""
        for name in list(self.by_slice):
            late = [w for w in self.by_slice[name] if w.deadline <= now]
            if not late:
                continue
            p = progress(name)
            for w in late:
                self._drop(name, w)
                self._answer(w, Progress(**{**vars(p), "timed_out": True}))
