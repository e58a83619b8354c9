"""Restarting a sliver whose command ended, by its spec's policy (Nomad's ``restart``).

Pure bookkeeping over statuses and a clock: a sliver that ``failed`` (or, with ``always``,
also ``exited``) is restarted after its backoff, doubling each time, at most ``attempts``
times in a row; a sliver that has run for ``RESET_AFTER`` seconds starts counting again.
When the attempts are spent its status says so (``gave_up``) and the controller decides:
move it to another node, or leave it ``failed`` with its reason. A sliver that could not
even be created here (``gave_up`` from the start) is not restarted: only moved.
"""

from __future__ import annotations

from collections.abc import Mapping

from slices.model import SliverSpec, SliverStatus
from slices.wire import replaced

RESET_AFTER = 60.0  # seconds running after which earlier failures no longer count


class Restarts:
    def __init__(self, counts: Mapping[str, int] | None = None) -> None:
        self.counts: dict[str, int] = dict(counts or {})
        self.due: dict[str, float] = {}
        self.running_since: dict[str, float] = {}

    def observe(self, statuses: Mapping[str, SliverStatus], desired: Mapping[str, SliverSpec], now: float) -> bool:
        """Note what runs and what ended; schedule restarts. True if the counts changed."""
        changed = False
        for sid in [s for s in self.counts if s not in desired]:
            del self.counts[sid]
            changed = True
        for sid in [s for s in self.due if s not in desired]:
            del self.due[sid]
        for sid, st in statuses.items():
            spec = desired.get(sid)
            if spec is None:
                continue
            if st.state == "running":
                since = self.running_since.setdefault(sid, now)
                if self.counts.get(sid) and now - since >= RESET_AFTER:
                    self.counts[sid] = 0
                    changed = True
                continue
            self.running_since.pop(sid, None)
            policy = spec.restart
            if st.state in ("failed", "exited") and not st.gave_up and policy.wants_restart(st.state) and self.counts.get(sid, 0) < policy.attempts and sid not in self.due:
                self.due[sid] = now + policy.delay(self.counts.get(sid, 0))
        return changed

    def due_now(self, now: float) -> list[str]:
        return sorted(sid for sid, at in self.due.items() if at <= now)

    def started(self, sid: str) -> None:
        """A restart was attempted (whatever came of it)."""
        self.due.pop(sid, None)
        self.counts[sid] = self.counts.get(sid, 0) + 1

    def annotate(self, statuses: Mapping[str, SliverStatus], desired: Mapping[str, SliverSpec]) -> dict[str, SliverStatus]:
        """Each status with its restart count, and ``gave_up`` once the policy is spent."""
        out = {}
        for sid, st in statuses.items():
            n = self.counts.get(sid, 0)
            spec = desired.get(sid)
            ended = spec is not None and st.state in ("failed", "exited") and spec.restart.wants_restart(st.state)
            spent = st.gave_up or (ended and spec is not None and n >= spec.restart.attempts)
            reason = st.reason
            if spent and n:
                reason = f"gave up after {n} restarts: {st.reason}"
            elif sid in self.due and spec is not None:
                reason = f"{st.reason}; restart {n + 1} of {spec.restart.attempts} is due"
            out[sid] = st if (n, spent, reason) == (st.restarts, st.gave_up, st.reason) else replaced(st, restarts=n, gave_up=spent, reason=reason)
        return out
