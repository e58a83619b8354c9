"""One node agent: registration, heartbeats both ways, desired sets in, reconcile, reports out.

It is driven by a loop (``host.py``) that calls ``on_frame`` when its socket is readable and
``tick`` when ``due()`` passes. Slivers keep running while the controller is unreachable; the
last desired set is cached on disk and applied again at start-up, which also re-adopts what
the backends still run and destroys what is no longer wanted.
"""

from __future__ import annotations

import contextlib
import logging
import math
import queue
import random
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from node_agent import firewall, reconciler
from node_agent.backends.base import Backend, BackendError, ExecFailed, ExecUnsupported
from node_agent.backends.execio import ExecStdin, Terminal
from node_agent.codecache import CodeCache
from node_agent.codefetch import CodeFetcher
from node_agent.outgoing import Outgoing, Sender
from node_agent.reporting import USAGE_EVERY, Reporter
from node_agent.restarts import Restarts
from node_agent.slicenet import PeerSets
from node_agent.statecache import Cached, DesiredCache
from node_agent.worker import InlineExecutor, ThreadExecutor
from slices.codec import BadBody, Envelope, decode, encode, new_id
from slices.errors import ProtocolError
from slices.model import NodeInfo, SliverSpec, SliverStatus, Usage
from slices.protocol import (
    Beat,
    Desired,
    Error,
    ExecInput,
    ExecOutput,
    ExecResize,
    ExecResult,
    FetchCode,
    Goodbye,
    Heartbeat,
    LogChunk,
    Message,
    NodeExec,
    NodeLogs,
    Ok,
    Peer,
    Pulse,
    PushCode,
    Register,
    Report,
    SendCode,
    result_of,
)
from slices.ratelimit import PeerWarnings
from slices.statefile import SCRATCH
from slices.transport import ClientKeys, Dealer
from slices.wire import packable, replaced, to_wire

if TYPE_CHECKING:  # only real machines have one; the simulated ones need not import netlink
    from node_agent.machine_resources import MachineResources

log = logging.getLogger(__name__)
#: what a look at the backends gives: every status (without usage), each running sliver's usage
Observed = tuple[dict[str, SliverStatus], dict[str, Usage]]


class Agent:
    def __init__(
        self,
        info: NodeInfo,
        backends: dict[str, Backend],
        controller: str,
        *,
        state_dir: Path | None,
        period: float = 1.0,
        misses: int = 3,
        max_frame_bytes: int = 16 * 1024 * 1024,
        executor: InlineExecutor | ThreadExecutor | None = None,
        clock: Callable[[], float],
        keys: ClientKeys,
        token: str | None = None,
        durable: bool = True,
        machine: MachineResources | None = None,
        code_cache_bytes: int = 4 << 30,
        code_peers: bool = True,
    ) -> None:
        self.info = info
        self.name = info.name
        self.backends = backends
        #: the node-level resources the real backends share (None with the sim backend only)
        self.machine = machine
        self.clock = clock
        self.period = period
        self.misses = misses
        self.max_frame_bytes = max_frame_bytes
        self.executor = executor or InlineExecutor()
        self.exec_inputs: dict[str, ExecStdin] = {}  # running execs that take input, by request id
        self.dealer = Dealer(controller, f"agent:{info.name}", keys)
        self.peer_log = PeerWarnings(log)  # bad frames: logged at a bounded rate
        self.token = token  # a one-time enrolment token, sent until the first registration succeeds
        self.refusal: str | None = None  # the code of the last registration refusal, to log changes once
        # A real machine's state is written (and fsynced) as it changes. A simulated one's is
        # queued with its next heartbeat and written on the process's scratch thread
        # (statefile.SCRATCH): a host of thousands of simulated machines that wrote two files
        # per machine per change on its loop blocked for seconds on a busy disk, and its
        # heartbeats with it (nodes falsely marked down). The controller resends what a
        # restart lost (the generation in every heartbeat says what the node applied).
        self.durable = durable
        self.unsaved = False  # state or backend records not yet written (simulated machines only)
        self.cache = DesiredCache(state_dir, fsync=durable)
        cached = self.cache.load()
        # An unreadable cache is not an empty desired set: until the controller sends one,
        # nothing that runs here is destroyed.
        self.known = cached is not None
        cached = cached or Cached()
        self.generation, self.desired, self.cluster, self.orphans = cached.generation, cached.desired, cached.cluster, cached.orphans
        self.restarts = Restarts(cached.restarts)
        self.peers, self.open_slices = list(cached.peers), list(cached.open_slices)  # who may talk to whom (slicenet.py)
        self.peer_sets = PeerSets.of(self.peers)  # the controller's changes apply to these
        self._firewall_due = 0.0  # monotonic time of the next check that the node's tables exist
        self.applied = self.generation
        self.statuses: dict[str, SliverStatus] = {}  # without usage: that is in ``usages``
        self.usages: dict[str, Usage] = {}  # each running sliver's, as last measured
        self.looked = -math.inf  # when a reconcile or a refresh last had every sliver's status (clock)
        self.measured = -math.inf  # when a refresh last measured every running sliver's usage (clock)
        self.reporter = Reporter()  # what the controller has acknowledged: only changes are sent
        self._parts: dict[int, dict[int, Desired]] = {}  # desired sets arriving in parts, by generation
        self.registered = False
        self.contacted = False  # a Register has been sent: the controller may know this node
        self.controller_lost = False
        self.pulses = 0  # heartbeats that may go as unanswered pulses between two answered ones (Beat.pulses)
        self.pulsed = 0  # pulses sent since the last answer
        self.report_seq = 0  # reconcile reports sent since registering (Report.seq)
        self.checks_reports = False  # the controller acknowledges reports by silence (Beat.checks_reports)
        self.pending: dict[str, Message] = {}
        now = clock()
        self.last_reply = now
        self.next_register = now
        self.register_backoff = 0.25
        self.next_beat = now + period
        self.busy = False
        self.again = False
        self.outgoing = Outgoing(info.name, self.executor.post, self._reconcile, threaded=isinstance(self.executor, ThreadExecutor))
        code_root = machine.code_root if machine is not None else (state_dir / "code" if state_dir is not None else None)
        # Callbacks from this agent's own threads (a code bundle from a peer): the worker's
        # queue, or for an inline executor the host's (AgentHost sets ``posted`` and ``wake``).
        self.posted: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self.wake: Callable[[], None] = lambda: None
        self.code = CodeFetcher(info.name, CodeCache(code_root, code_cache_bytes), self._send, self.executor.submit, self._reconcile, clock, self._post, peers=code_peers)

    # ---- start-up: re-adopt what runs, apply the cached desired set -------------------------

    def start(self) -> None:
        self.code.want(self.desired)
        self._reconcile()

    def _post(self, callback: Callable[[], None]) -> None:
        """From any thread: run ``callback`` on the loop thread."""
        if isinstance(self.executor, ThreadExecutor):
            self.executor.post(callback)
        else:
            self.posted.put(callback)
            self.wake()

    def _backend_for(self, spec: SliverSpec) -> Backend:
        backend = self.backends.get(spec.isolation)
        if backend is None:
            raise BackendError(f"this node offers no {spec.isolation} isolation")
        return backend

    def _sender_for(self, spec: SliverSpec) -> Sender:
        backend = self._backend_for(spec)
        if not isinstance(backend, Sender):
            raise BackendError(f"the {backend.name} backend cannot move slivers")
        return backend

    def _distinct_backends(self) -> list[Backend]:
        seen: dict[int, Backend] = {}
        for b in self.backends.values():
            seen.setdefault(id(b), b)
        return list(seen.values())

    def _reconcile(self) -> None:
        if self.busy:
            self.again = True
            return
        self.busy = True
        generation, desired, known, keep = self.generation, dict(self.desired), self.known, frozenset(self.orphans)
        net = (list(self.peers), list(self.open_slices))
        self.executor.submit(lambda: self._apply(desired, known, keep, net), lambda res, exc: self._applied(generation, res, exc))

    def _network(self, desired: dict[str, SliverSpec], net: tuple[list[Peer], list[str]], creating: tuple[SliverSpec, ...] = ()) -> None:
        """Runs on the executor: the firewall's slice sets and the slivers' /etc/hosts follow
        who shares a slice with whom (slicenet.py). Before ``creating`` starts, its addresses
        are taken from the pool (the backend gets the same) so no sliver ever runs outside
        its slice's isolation; a failure raises, and nothing is created."""
        if self.machine is None:
            return
        pool = self.machine.addresses
        for spec in creating:
            pool.allocate(spec.id, save=False)
        pool.flush()  # once for the batch
        have = pool.allocated()
        local = {sid: (spec.slice, have[sid]) for sid, spec in desired.items() if sid in have}
        if self.machine.set_slices(net[0], net[1], local):
            for backend in self._distinct_backends():
                backend.network_changed()

    def _apply(
        self, desired: dict[str, SliverSpec], known: bool = True, keep: frozenset[str] = frozenset(), net: tuple[list[Peer], list[str]] = ([], [])
    ) -> Observed:
        """Runs on the executor: bring the backends to ``desired``; return every status (and
        the usage last measured: ``_with_usage``).

        ``keep`` (orphans of an earlier cluster) are never destroyed, desired or not."""
        actual: dict[str, SliverStatus] = {}
        owner: dict[str, Backend] = {}
        for backend in self._distinct_backends():
            for st in backend.list():
                actual[st.id] = st
                owner[st.id] = backend
        actions = reconciler.diff(desired, actual)
        for sid in actions.destroy if known else ():
            if sid in keep:
                continue
            try:
                owner[sid].destroy(sid)
                log.info("%s: destroyed sliver %s (no longer desired)", self.name, sid)
            except BackendError as exc:
                log.error("%s: destroying %s failed: %s", self.name, sid, exc.reason)
        statuses = {sid: st for sid, st in actual.items() if sid in desired}
        for sid, st in statuses.items():  # sent away, then the move was taken back: run here again
            if st.migration is not None and st.migration.phase == "sent" and desired[sid].migration is None:
                try:
                    statuses[sid] = owner[sid].start(sid)
                    log.info("%s: sliver %s runs here again (its move was taken back)", self.name, sid)
                except BackendError as exc:
                    statuses[sid] = SliverStatus(sid, "failed", f"its move was taken back, and it did not start here again: {exc.reason}")
        self._network(desired, net, actions.create)
        for spec in actions.create:
            if not self.code.ready_for(spec):  # its code is still on its way: created once it is here
                statuses[spec.id] = self.code.waiting(spec)
                continue
            try:
                statuses[spec.id] = self._backend_for(spec).create(spec)
            except BackendError as exc:
                log.error("%s: creating %s failed: %s", self.name, spec.id, exc.reason)
                # never created here, so nothing to restart: the controller may move it
                statuses[spec.id] = SliverStatus(spec.id, "failed", exc.reason, gave_up=True)
        if self.durable:
            self._flush_backends()
        else:
            self.unsaved = True
        gone = self.code.cache.evict({s.code.digest for s in desired.values() if s.code is not None})
        if gone:
            self._post(lambda: self.code.evicted(gone))
        if actions.create:
            self._network(desired, net)  # a create that failed gave its address back
        return self._with_usage(statuses, desired, measure=False)

    def _with_usage(self, statuses: dict[str, SliverStatus], desired: dict[str, SliverSpec], *, measure: bool = True) -> Observed:
        """Each status with its address from the node's pool, and the usage of each running
        sliver, apart: a heartbeat sends a share of them (``Reporter``), and putting each in
        its status at every look was a copy of every status, every heartbeat. ``measure``
        False (after a reconcile): the usage last measured, if any; the heartbeat's look
        measures them all again."""
        pool = self.machine.addresses.allocated() if self.machine is not None else {}
        out, usages, before = {}, {}, self.usages
        for sid, st in statuses.items():
            if st.state == "running" and sid in desired:
                if measure:
                    with contextlib.suppress(BackendError):
                        usages[sid] = self._backend_for(desired[sid]).usage(sid)
                elif sid in before:
                    usages[sid] = before[sid]
            address = pool.get(sid, st.address)
            out[sid] = st if st.usage is None and address == st.address else replaced(st, usage=None, address=address)
        return out, usages

    def _refresh(self) -> Observed:
        """Runs on the executor: current status and usage of every desired sliver (and, now
        and then, that the node's firewall is still there)."""
        self._check_firewall()
        desired = dict(self.desired)
        statuses = {}
        for sid, spec in desired.items():
            before = self.statuses.get(sid)
            try:
                st = self._backend_for(spec).status(sid)
            except BackendError as exc:
                st = SliverStatus(sid, "failed", exc.reason)
            if st.state == "lost" and before is not None and before.state == "failed":
                st = before  # a create that failed and was rolled back: keep its reason
            elif st.state == "lost" and not self.code.ready_for(spec):
                st = self.code.waiting(spec)  # created once its code is here
            statuses[sid] = st
        return self._with_usage(statuses, desired)

    def _check_firewall(self) -> None:
        """Runs on the executor, at most every ``firewall.CHECK_EVERY`` s: tables lost while the agent
        runs (a flushed ruleset) are made again at once, not at its next start."""
        now = time.monotonic()
        if self.machine is None or now < self._firewall_due:
            return
        self._firewall_due = now + firewall.CHECK_EVERY
        try:
            if self.machine.check_firewall():
                log.warning("%s: the node's firewall tables were gone (a flushed ruleset?); made again, with the slice sets", self.name)
        except (firewall.FirewallError, OSError, subprocess.SubprocessError) as exc:
            log.error("%s: checking the node's firewall failed: %s", self.name, exc)

    def _applied(self, generation: int, result: Any, exc: BaseException | None) -> None:
        self.busy = False
        if exc is not None:
            log.error("%s: reconcile of generation %d failed: %s", self.name, generation, exc)
        else:
            self.looked = self.clock()
            self._observed(result)
            self.applied = generation
            if self.registered:
                picked = self.reporter.pick(self.statuses, self.usages, usage=False)
                self.report_seq += 1
                self._send(Report(node=self.name, generation=generation, slivers=picked, seq=self.report_seq))
                if self.checks_reports:  # acknowledged by silence: a lost one is answered report-lost
                    self.reporter.acknowledge(picked)
        if self.again:
            self.again = False
            self._reconcile()

    def _observed(self, observed: Observed) -> None:
        """New statuses from the backends: schedule restarts by policy, count them in."""
        statuses, self.usages = observed
        if self.restarts.observe(statuses, self.desired, self.clock()):
            self._save()
        statuses = self.restarts.annotate(statuses, self.desired)
        self.statuses = self.code.annotate(self.outgoing.annotate(statuses, self.desired), self.desired)
        self.outgoing.start_due(self.desired, self.statuses, self._sender_for)

    def _restart_due(self, now: float) -> None:
        """Restart one sliver whose backoff has passed (others wait for the next tick)."""
        due = [sid for sid in self.restarts.due_now(now) if sid in self.desired]
        if not due or self.busy:
            return
        sid, spec = due[0], self.desired[due[0]]
        self.restarts.started(sid)
        self._save()
        log.info("%s: restarting sliver %s (restart %d of %d)", self.name, sid, self.restarts.counts[sid], spec.restart.attempts)
        self.busy = True

        def restart() -> Observed:
            try:
                self._backend_for(spec).start(sid)
            except BackendError as exc:
                log.error("%s: restarting %s failed: %s", self.name, sid, exc.reason)
            return self._refresh()

        self.executor.submit(restart, self._refreshed)

    def _refresh_due(self, now: float) -> bool:
        """Whether this heartbeat looks at every sliver again: not when a reconcile did within
        half a period (it listed every status), unless usage was last measured ``USAGE_EVERY``
        periods ago or more. Under a stream of changes (a reconcile every few tenths of a
        second) the looks found nothing the reconciles had not: 13% of a simulated machines'
        host's time in ``bench e2e``. A status is at most 1.5 periods old, as against one;
        a usage at most ``USAGE_EVERY`` periods, as long as a heartbeat's share of them
        takes to go round."""
        return now - self.looked >= self.period / 2 or now - self.measured >= self.period * USAGE_EVERY

    def _refreshed(self, result: Any, exc: BaseException | None) -> None:
        self.busy = False
        if exc is None:
            self.looked = self.measured = self.clock()
            self._observed(result)
        if self.again:
            self.again = False
            self._reconcile()

    # ---- the wire ---------------------------------------------------------------------------

    def _send(self, msg: Message) -> None:
        msg_id = new_id()
        if msg.REQUEST:
            self.pending[msg_id] = msg
            if len(self.pending) > 64:  # replies that never came: forget the oldest
                self.pending.pop(next(iter(self.pending)))
        self.dealer.send(encode(msg, id=msg_id, sender=self.name))

    def _node_usage(self) -> Usage:
        return Usage.total(self.usages.values())

    def due(self) -> float:
        if not self.registered:
            return self.next_register
        code = self.code.due()
        return self.next_beat if code is None else min(self.next_beat, code)

    def tick(self) -> None:
        now = self.clock()
        self.save_now()
        if not self.registered:
            if now >= self.next_register:
                self.reporter.reset()
                self.report_seq = 0  # the controller numbers this registration's reports afresh
                self._send(
                    Register(
                        node=self.info,
                        slivers=self.reporter.pick(self.statuses, self.usages),
                        generation=self.applied,
                        token=self.token,
                        cluster=self.cluster,
                        orphans=list(self.orphans.values()),
                        deltas=True,
                    )
                )
                self.contacted = True
                self.register_backoff = min(self.register_backoff * 2, 5.0)
                self.next_register = now + self.register_backoff * random.uniform(0.8, 1.2)
            return
        code = self.code.due()
        if code is not None and now >= code:
            self.code.tick(now)
        if now >= self.next_beat:
            if now - self.last_reply > self.period * (self.misses + self.pulses) and not self.controller_lost:
                # Heartbeats go on, each with every sliver's status until one is answered (a
                # restarted controller may have lost what it had acknowledged); a controller
                # that no longer knows this node answers ``unknown-node`` and it registers
                # then. Registering again on silence alone turned a controller slowed by a
                # registration burst into a storm of registrations (10,000 nodes never came up).
                self.controller_lost = True
                self.reporter.reset()
                log.warning("%s: controller silent for %.1fs; keeping %d slivers running, heartbeating on", self.name, now - self.last_reply, len(self.desired))
            picked = self.reporter.pick(self.statuses, self.usages)
            if self.pulsed < self.pulses and not (self.reporter.changes or self.orphans or self.controller_lost):
                # Nothing to acknowledge: no answer wanted (an answer is a third of the cost)
                self.pulsed += 1
                self._send(Pulse(node=self.name, generation=self.applied, slivers=picked, usage=self._node_usage(), reported=self.report_seq))
            else:
                self._send(Heartbeat(node=self.name, generation=self.applied, slivers=picked, usage=self._node_usage(), orphans=sorted(self.orphans), reported=self.report_seq))
            self.next_beat = now + self.period
            self._restart_due(now)
            self.code.tick(now)
            if not self.busy and self.desired and self._refresh_due(now):
                self.busy = True
                self.executor.submit(self._refresh, self._refreshed)

    def on_readable(self, limit: int = 1 << 30) -> None:
        for _ in range(limit):
            frame = self.dealer.recv()
            if frame is None:
                return
            self.on_frame(frame)

    def on_frame(self, frame: bytes | memoryview) -> None:
        try:
            env = decode(frame, max_bytes=self.max_frame_bytes)
        except BadBody as exc:
            self.peer_log.warning("%s: refusing a malformed %s from the controller: %s", self.name, exc.type_name, exc.reason)
            if exc.is_request:
                self._answer(exc.msg_id, Error(exc.code, exc.reason))
            return
        except ProtocolError as exc:
            self.peer_log.warning("%s: dropping a frame from the controller: %s", self.name, exc.reason)
            return
        msg = env.msg
        now = self.clock()
        if isinstance(msg, Desired):
            self.last_reply = now
            self._on_desired(msg)
            return
        if isinstance(msg, (NodeExec, NodeLogs)):
            self._on_request(env)
            return
        if isinstance(msg, (ExecInput, ExecResize)):
            self._on_input(msg)
            return
        if isinstance(msg, PushCode):
            self.code.on_push(msg)
            return
        if isinstance(msg, SendCode):
            self.code.on_send(msg)
            return
        request = self.pending.pop(env.id, None)
        if request is None:
            if isinstance(msg, Error) and msg.code in ("unknown-node", "report-lost") and self.registered:
                self._on_error("notice", msg)  # to a pulse or report: register again, or report everything again
            return  # a late reply to a request we gave up on
        self.last_reply = now
        if self.controller_lost:
            self.controller_lost = False
            log.info("%s: controller reachable again", self.name)
        if isinstance(request, FetchCode):
            self._on_code(request, msg)
            return
        if isinstance(msg, Ok):
            try:
                beat = result_of(request, msg)
            except ProtocolError as exc:
                self.peer_log.warning("%s: dropping a malformed reply to %s: %s", self.name, request.TYPE, exc.reason)
                return
            self._on_beat(request, beat, now)
        elif isinstance(msg, Error):
            self._on_error(request.TYPE, msg)

    def _on_code(self, request: FetchCode, msg: Message) -> None:
        if isinstance(msg, Error):
            self.code.on_error(request, msg)
            return
        if not isinstance(msg, Ok):
            return
        try:
            chunk = result_of(request, msg)
        except ProtocolError as exc:
            self.peer_log.warning("%s: dropping a malformed code chunk: %s", self.name, exc.reason)
            return
        self.code.on_chunk(chunk)

    def _save(self) -> None:
        if not self.durable:
            self.unsaved = True
            return
        self._write_cache()

    def _flush_backends(self) -> None:
        for backend in self._distinct_backends():
            backend.flush()

    def save_now(self) -> None:
        """Write what a simulated machine has not written yet (at its heartbeat, on close)."""
        if self.unsaved:
            self.unsaved = False
            self._write_cache()
            self._flush_backends()

    def _write_cache(self) -> None:
        self.cache.save(Cached(self.generation, self.desired, self.cluster, self.orphans, dict(self.restarts.counts), self.peers, self.open_slices))

    def _on_cluster(self, beat: Beat, now: float) -> bool:
        """Follow the controller's cluster identity; True if this reply must be registered anew.

        Slivers made by another cluster (the controller lost its database and an operator
        began a new one) become orphans: they keep running, untouched by reconciles, and are
        reported until an operator adopts or destroys them."""
        if beat.drop_orphans:
            gone = [sid for sid in beat.drop_orphans if self.orphans.pop(sid, None) is not None]
            if gone:
                log.warning("%s: destroying %d orphaned slivers, as an operator decided", self.name, len(gone))
                self._save()
                self._reconcile()
        if not beat.cluster or beat.cluster == self.cluster:
            return False
        if not self.cluster:  # the first cluster this agent meets
            self.cluster = beat.cluster
            self._save()
            return False
        moved = {**self.orphans, **self.desired}
        log.warning(
            "%s: the controller serves cluster %s, not %s (its database was lost or replaced): keeping %d slivers running as orphans until an operator adopts or destroys them",
            self.name,
            beat.cluster,
            self.cluster,
            len(moved),
        )
        self.cluster, self.orphans, self.desired, self.generation, self.applied = beat.cluster, moved, {}, 0, 0
        self._save()
        self.registered, self.next_register = False, now  # register again, orphans included
        return True

    def _on_beat(self, request: Message, beat: Beat, now: float) -> None:
        if beat.period < self.period:
            # A shorter period holds from now: the controller judges this node's silence by it
            # already. Waiting out the longer one, a node told 1 s after 4 s (pulses tell no
            # period, so the relaxing stretch reaches it in one step) was marked down.
            self.next_beat = min(self.next_beat, now + beat.period)
        self.period = beat.period
        self.misses = beat.misses
        self.pulses, self.pulsed = beat.pulses, 0
        self.checks_reports = beat.checks_reports
        if isinstance(request, (Register, Heartbeat)):
            self.reporter.acknowledge(request.slivers)
        if self._on_cluster(beat, now):
            return
        if isinstance(request, Register) and not self.registered:
            self.registered = True
            self.token = None
            self.register_backoff = 0.25
            self.next_beat = now + self.period * random.uniform(0.5, 1.0)
            log.info("%s: registered; heartbeat every %.2fs", self.name, self.period)
            self.code.announce()

    def _on_error(self, kind: str, err: Error) -> None:
        if err.code == "report-lost" and kind != "register":
            # A report never reached the controller: every status goes again, in a heartbeat
            # now (answered, so acknowledged).
            log.warning("%s: the controller missed a report; sending every sliver's status again", self.name)
            self.reporter.reset()
            self.next_beat = min(self.next_beat, self.clock())
            return
        if err.code == "unknown-node" or kind == "register":
            self.registered = False
            if kind != "register":
                return
            if err.code == "pending":  # waiting for an operator: say so once, keep asking
                if self.refusal != err.code:
                    log.warning("%s: %s", self.name, err.reason)
            else:
                log.error("%s: registration refused: %s: %s", self.name, err.code, err.reason)
            self.refusal = err.code
            if err.code in ("version-mismatch", "forbidden"):
                self.register_backoff = 5.0
            elif err.code == "pending":  # an operator may accept it any moment
                self.register_backoff = 1.0
            return
        log.warning("%s: %s refused: %s: %s", self.name, kind, err.code, err.reason)

    def _on_desired(self, msg: Desired) -> None:
        if msg.generation < self.generation:
            self._missed_peers(msg)
            return  # an older push overtaken by a newer one
        if msg.parts > 1:  # a large set comes in parts: apply it once every part is here
            for old in [g for g in self._parts if g < msg.generation]:
                for part in self._parts.pop(old).values():
                    self._missed_peers(part)
            got = self._parts.setdefault(msg.generation, {})
            got[msg.part] = msg
            if len(got) < msg.parts:
                return
            del self._parts[msg.generation]
            specs = {s.id: s for part in sorted(got) for s in got[part].slivers}
            first = got[min(got)]
        elif msg.base >= 0:  # what changed since a set it holds (protocol 2.10)
            if msg.base != self.generation or not self.known:
                log.info("%s: a set of changes to generation %d, holding %d: asking for it whole", self.name, msg.base, self.generation)
                self._missed_peers(msg)
                self._send(Report(node=self.name, generation=self.applied, resync=True))
                return
            specs = dict(self.desired)
            for sid in msg.removed:
                specs.pop(sid, None)
            specs.update((s.id, s) for s in msg.slivers)
            first = msg
        else:
            specs, first = {s.id: s for s in msg.slivers}, msg
        net = (self._peers_from(first), list(first.open_slices))
        if msg.generation == self.generation and specs == self.desired and self.applied == msg.generation:
            if net != (self.peers, self.open_slices):  # only who may talk to whom changed
                self.peers, self.open_slices = net
                self._save()
                self._reconcile()
                return
            self._send(Report(node=self.name, generation=self.applied, slivers=self.reporter.pick(self.statuses, self.usages, usage=False)))
            return
        self.generation, self.desired, self.known = msg.generation, specs, True
        self.code.want(specs)
        self.peers, self.open_slices = net
        for sid in [s for s in self.orphans if s in specs]:  # adopted by the controller: desired again
            del self.orphans[sid]
        self._save()
        self._reconcile()

    def _missed_peers(self, msg: Desired) -> None:
        """A set dropped unapplied: the address changes it carried are asked for whole, since
        the controller counts them as told (a later change would find the gap, but a slice
        that does not change again would stay out of date)."""
        missed = sorted({ch.slice for ch in msg.peer_changes})
        if missed:
            self._ask_whole(missed)

    def _peers_from(self, first: Desired) -> list[Peer]:
        """Every address this node's slivers may reach, after the set's changes; a slice whose
        change came based on a version this node does not hold is asked for whole."""
        if not first.peer_sets:  # a controller before protocol 2.6: the whole list
            self.peer_sets = PeerSets.of(first.peers)
            return list(first.peers)
        stale = self.peer_sets.apply(first.peer_slices, first.peer_changes)
        if stale:
            log.info("%s: addresses of %s arrived out of turn; asking for them whole", self.name, ", ".join(stale[:5]))
            self._ask_whole(stale)
        return self.peer_sets.peers()

    def _ask_whole(self, slices: list[str]) -> None:
        """Have the controller send these slices' addresses whole (``Report.peers_stale``)."""
        self._send(Report(node=self.name, generation=self.applied, peers_stale=slices))

    # ---- requests relayed from users: exec and logs ------------------------------------------

    def _answer(self, request_id: str, msg: Message) -> None:
        self.dealer.send(encode(msg, id=request_id, sender=self.name))

    def _on_request(self, env: Envelope) -> None:
        msg = env.msg
        assert isinstance(msg, (NodeExec, NodeLogs))
        spec = self.desired.get(msg.sliver)
        if spec is None:
            self._answer(env.id, Error("not-found", f"sliver {msg.sliver} is not on node {self.name}"))
            return
        try:
            backend = self._backend_for(spec)
        except BackendError as exc:
            self._answer(env.id, Error("unsupported", exc.reason))
            return
        if isinstance(msg, NodeLogs):
            offset, limit = msg.offset, msg.limit

            def done(result: Any, exc: BaseException | None) -> None:
                if exc is not None:
                    self._answer(env.id, Error("unsupported" if isinstance(exc, BackendError) else "internal", getattr(exc, "reason", str(exc))))
                else:
                    data, next_offset = result
                    self._answer(env.id, Ok(packable(LogChunk(data=data, offset=next_offset, node=self.name, sliver=spec.id))))

            self.executor.submit(lambda: backend.logs(spec.id, offset, limit), done)
            return
        argv, timeout = [str(a) for a in msg.argv], msg.timeout
        tty = Terminal(msg.rows, msg.cols) if msg.tty else None
        stdin = ExecStdin() if msg.stdin or msg.tty else None  # a terminal's resizes come this way too
        if stdin is not None:
            self.exec_inputs[env.id] = stdin

        def run() -> None:
            """On its own thread: an exec can run for minutes without blocking reconciles."""
            try:
                for stream, data in backend.exec(spec.id, argv, timeout, stdin, tty):
                    if stream == "exit":
                        result = to_wire(ExecResult(exit_code=int(data), node=self.name, sliver=spec.id))
                        self.executor.post(lambda r=result: self._answer(env.id, Ok(r)))  # type: ignore[misc]
                        return
                    self.executor.post(lambda s=stream, d=data: self._send(ExecOutput(request=env.id, stream=s, data=d)))  # type: ignore[misc]
                self.executor.post(lambda: self._answer(env.id, Error("internal", "the command ended without an exit status")))
            except BackendError as exc:
                code, reason = "unsupported" if isinstance(exc, ExecUnsupported) else "exec-failed", exc.reason
                details = {"exit_code": exc.exit_code} if isinstance(exc, ExecFailed) else None
                self.executor.post(lambda: self._answer(env.id, Error(code, reason, details)))
            except Exception as exc:  # reported to the user, never lost
                log.exception("%s: exec in %s failed", self.name, spec.id)
                text = f"{type(exc).__name__}: {exc}"
                self.executor.post(lambda: self._answer(env.id, Error("internal", text)))
            finally:
                self.executor.post(lambda: self._exec_ended(env.id))

        if isinstance(self.executor, ThreadExecutor):
            threading.Thread(target=run, name=f"exec-{spec.id}", daemon=True).start()
        else:
            run()  # the accounting-only backend refuses at once

    def _exec_ended(self, request_id: str) -> None:
        self.exec_inputs.pop(request_id, None)

    def _on_input(self, msg: ExecInput | ExecResize) -> None:
        """The user's input to a running exec (relayed by the controller, under its request id)."""
        stdin = self.exec_inputs.get(msg.request)
        if stdin is None:
            return  # the command ended already, or never asked for input
        if isinstance(msg, ExecResize):
            stdin.resize(msg.rows, msg.cols)
            return
        stdin.write(msg.data)
        if msg.eof:
            stdin.close()

    def close(self, *, goodbye: bool = True) -> None:
        """Stop talking to the controller: an agent that has asked to register says goodbye
        first, so its node shows ``stopped`` (slivers keep running) instead of waiting to be
        found ``down``. Even before the welcome arrives: the controller may know it already,
        and ignores a goodbye from a peer it does not know."""
        self.code.close()
        self.save_now()
        if not self.durable:
            SCRATCH.flush()  # a restart in this process (sim restore) reads what was written
        if goodbye and self.contacted:
            self.dealer.send(encode(Goodbye(node=self.name), id=new_id(), sender=self.name))
            self.dealer.close(linger_ms=500)
            return
        self.dealer.close()

    def close_backends(self) -> None:
        """Flush and release the backends, then what they share (slivers keep running)."""
        for backend in self._distinct_backends():
            backend.close()
        if self.machine is not None:
            self.machine.close()
