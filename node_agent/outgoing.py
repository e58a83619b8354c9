"""The moves a node sends (slices/migration.py): one thread per sliver on its way out.

A send blocks for the whole transfer (seconds to minutes), so it runs neither on the agent's
loop nor on its backend worker (which would stall every other sliver's reconcile): each runs
on a thread of its own, calls the backend's ``send``, and hands its report back to the loop
(``post``). The report rides on the sliver's status until the controller ends the move: it
removes the sliver from this node (the move completed) or takes the move back (then the
sliver is started here again, see ``Agent._apply``).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Protocol, runtime_checkable

from node_agent.backends.base import BackendError
from slices.migration import MigrationReport
from slices.model import SliverSpec, SliverStatus

log = logging.getLogger(__name__)


@runtime_checkable
class Sender(Protocol):
    def send(self, spec: SliverSpec) -> MigrationReport: ...


class Outgoing:
    def __init__(self, node: str, post: Callable[[Callable[[], None]], None], changed: Callable[[], None], *, threaded: bool = True) -> None:
        self.node = node
        self.post = post  # run a callback on the loop thread
        self.changed = changed  # a report arrived: tell the controller
        self.threaded = threaded
        self.sending: dict[str, str] = {}  # sliver -> token of the move being sent
        self.reports: dict[str, tuple[str, MigrationReport]] = {}  # sliver -> (token, how it went)

    def start_due(self, desired: Mapping[str, SliverSpec], held: Mapping[str, SliverStatus], sender_for: Callable[[SliverSpec], Sender]) -> None:
        """Start sending each sliver this node holds whose desired spec says ``out`` with an
        endpoint, once per move (a move is its token)."""
        for sid, spec in desired.items():
            move = spec.migration
            if move is None or move.role != "out" or move.endpoint is None or sid not in held:
                continue
            if sid in self.sending or self.reports.get(sid, ("", None))[0] == move.token:
                continue
            try:
                sender = sender_for(spec)
            except BackendError as exc:
                self.reports[sid] = (move.token, MigrationReport(phase="failed", kind=move.kind, reason=exc.reason))
                continue
            self.sending[sid] = move.token
            log.info("%s: moving sliver %s to %s (%s)", self.node, sid, move.peer, move.kind)
            if self.threaded:
                threading.Thread(target=self._send, args=(sender, spec), name=f"move-{sid}", daemon=True).start()
            else:
                self._send(sender, spec)

    def _send(self, sender: Sender, spec: SliverSpec) -> None:
        move = spec.migration
        assert move is not None
        try:
            report = sender.send(spec)
        except BackendError as exc:
            report = MigrationReport(phase="failed", kind=move.kind, reason=exc.reason)
        except Exception as exc:  # reported, never lost: the move is taken back
            log.exception("%s: moving %s failed", self.node, spec.id)
            report = MigrationReport(phase="failed", kind=move.kind, reason=f"{type(exc).__name__}: {exc}")
        self.post(lambda: self._sent(spec.id, move.token, report))

    def _sent(self, sliver: str, token: str, report: MigrationReport) -> None:
        self.sending.pop(sliver, None)
        self.reports[sliver] = (token, report)
        if report.phase == "failed":
            log.warning("%s: moving sliver %s failed: %s", self.node, sliver, report.reason)
        else:
            log.info("%s: sliver %s sent: %s", self.node, sliver, report.summary())
        self.changed()

    def annotate(self, statuses: dict[str, SliverStatus], desired: Mapping[str, SliverSpec]) -> dict[str, SliverStatus]:
        """Each status of a sliver in a move this node sends, with how the send went; reports
        of moves that ended (no longer desired, or taken back) are forgotten."""
        for sid in list(self.reports):
            move = desired[sid].migration if sid in desired else None
            token, report = self.reports[sid]
            if move is None or move.token != token:
                del self.reports[sid]
            elif sid in statuses:
                statuses[sid] = dataclasses.replace(statuses[sid], migration=report)
        return statuses
