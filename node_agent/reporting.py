"""Which sliver statuses an agent sends: only what changed since the controller acknowledged
it, a bounded number per message, and usage for a rotating share of running slivers.

Why: a node with thousands of slivers would otherwise send every status and usage record in
every heartbeat, megabytes a second, over the controller's frame cap. Usage is sampled, not
streamed: each heartbeat carries the usage of one ``usage_every``-th of the running slivers,
so each sliver's usage is at most that many heartbeat periods old, and the controller decodes
a fifth of the records it used to (decoding every sliver's usage in every heartbeat was the
largest single cost of a busy controller). A ``report`` after a reconcile carries changes
only. Every ``full_every`` heartbeats the acknowledgements are forgotten, so every status is
sent again over the next heartbeats (a bounded number each): a periodic full report, which
mends whatever the controller's view lost without either side noticing. Pure bookkeeping: the
agent feeds it the current statuses and tells it what the controller acknowledged.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from slices.model import SliverStatus, Usage
from slices.wire import replaced

MAX_STATUSES = 2000  # per message: a heartbeat stays far below the controller's 1 MiB cap
USAGE_PER_BEAT = 500  # running slivers whose usage rides along, in turn, at most
USAGE_EVERY = 5  # heartbeats it takes for every running sliver's usage to have been sent
FULL_EVERY = 120  # heartbeats between full reports (2 min at the 1 s period; longer at 10,000 nodes)


class Reporter:
    def __init__(self, *, max_statuses: int = MAX_STATUSES, usage_per_beat: int = USAGE_PER_BEAT, usage_every: int = USAGE_EVERY, full_every: int = FULL_EVERY) -> None:
        self.max_statuses = max_statuses
        self.full_every = max(1, full_every)
        self._beats = 0
        self.usage_per_beat = usage_per_beat
        self.usage_every = max(1, usage_every)
        self.acked: dict[str, tuple[str, str | None, str | None]] = {}
        self._cursor = ""  # usage goes to the running slivers after this id, in id order
        self.changes = 0  # changes (not usage) in the last pick: they need an acknowledgement

    def reset(self) -> None:
        """After (re)registration the controller is assumed to know nothing."""
        self.acked.clear()

    def pick(self, statuses: Mapping[str, SliverStatus], usages: Mapping[str, Usage], *, usage: bool = True) -> list[SliverStatus]:
        """The statuses to send now: every change (up to the cap), and (``usage``: a
        heartbeat) usage for the next share of running slivers (``usages``: each one's, kept
        apart from its status); others go without it."""
        if usage:
            self._beats += 1
            if self._beats % self.full_every == 0:
                self.acked.clear()  # the periodic full report
        for sid in [s for s in self.acked if s not in statuses]:
            del self.acked[sid]
        order = sorted(statuses)
        changed = [sid for sid in order if self.acked.get(sid) != _key(statuses[sid])][: self.max_statuses]
        self.changes = len(changed)
        running = [sid for sid in order if statuses[sid].state == "running" and sid in usages] if usage else []
        after = [sid for sid in running if sid > self._cursor] + [sid for sid in running if sid <= self._cursor]
        turn = after[: min(self.usage_per_beat, -(-len(running) // self.usage_every))]
        if turn:
            self._cursor = turn[-1]
        with_usage = set(turn)
        room = max(0, self.max_statuses - len(changed))
        extra = [sid for sid in turn if sid not in set(changed)][:room]
        out = []
        for sid in sorted({*changed, *extra}):
            st = statuses[sid]
            u = usages.get(sid) if sid in with_usage else None
            out.append(st if st.usage is u else replaced(st, usage=u))
        return out

    def acknowledge(self, sent: Iterable[SliverStatus]) -> None:
        for st in sent:
            self.acked[st.id] = _key(st)


def _key(st: SliverStatus) -> tuple[str, str | None, str | None]:
    """What makes a status worth sending again: state, reason and address."""
    return st.state, st.reason, st.address
