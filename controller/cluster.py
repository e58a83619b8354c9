"""The controller's state: nodes, slices and slivers in memory, written through to the store.

Handlers call these methods; the server loop drains ``dirty_nodes`` (desired sets to push)
and ``flush()``es batched sliver-state updates once per loop turn.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import time
from collections.abc import Callable, Generator, Iterator
from typing import Any

from controller import healing, lifecycle, moves, peers
from controller.loading import load
from controller.nodeindex import sliver_cost
from controller.placement import NodeIndex, NodeView, Plan, Refusal, node_view, place_steps
from controller.records import SliceRecord, SliverRecord, new_sliver_ids
from controller.registry import NodeRecord, Registry
from controller.steps import complete
from controller.store import DELETING, PART_ROWS, SliceRow, SliverRow, Store
from controller.storefile import StoreError
from slices import faults
from slices.errors import AlreadyExists, BadRequest, Busy, Infeasible, NotFound
from slices.model import NodeInfo, Resources, SliverSpec, SliverStatus
from slices.protocol import Progress
from slices.spec import MAX_LIFETIME, LocationRequest, SliceSpec, parse_spec
from slices.wire import replaced

log = logging.getLogger(__name__)

ROWS_CHUNK = 500  # a new slice's sliver rows made between steps: ~3 ms of Python
CHARGE_CHUNK = 2500  # nodes charged (or freed) a sliver's cost between steps: ~5 ms
VIEWS_CHUNK = 1000  # node views made between steps of an index rebuild: ~6 ms
WALK_ALONE = 2000  # slivers of a slice being deleted from which its lookups take a step of their own
FLUSH_ROWS = 1000  # sliver states the loop writes in one turn's flush at most: ~3 ms of SQLite

ID_MARK = "\x00sliver-id\x00"  # where a sliver's id goes in the JSON text of its spec (no name holds NUL)

#: Sliver-level "started" events go to the timeline only for slices of at most this many
#: slivers (a 10,000-sliver slice says once that all started, not 10,000 times).
EVENTS_PER_SLIVER_UP_TO = 100


class Cluster:
    def __init__(self, store: Store, registry: Registry, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self.registry = registry
        self.slices: dict[str, SliceRecord] = {}
        self.slivers: dict[str, SliverRecord] = {}
        self.dirty_nodes: dict[str, None] = {}  # an ordered set: pushed oldest first, so none starves
        #: Changed nodes whose last set is not applied yet: they get their next set, with every
        #: change made meanwhile, once it is (``apply_report``), or a period after the last one
        #: if the agent never says (``hold``). One set in flight per node: an agent slower than
        #: the changes gets fewer, fuller sets, not a queue of sets it will only skip.
        self.held_nodes: dict[str, None] = {}
        self.changing = 0  # changes under way in steps (a create being placed and written, a big delete's rows): others wait
        self._index: NodeIndex | None = None
        self._sliver_updates: dict[str, tuple[str, str | None]] = {}
        self.unwritten = False  # the last flush wrote fewer sliver states than were pending
        self._node_upserts: dict[str, NodeRecord] = {}
        self._slice_updates: set[str] = set()
        self._slice_writes: set[str] = set()  # slices whose new state is not yet stored
        self.changes = 0  # a counter every slice change advances (Progress.version)
        self.touched: set[str] = set()  # slices changed since the loop last looked (waits)
        self.subnets = peers.SubnetIndex()  # nodes' sliver subnets, to refuse overlaps at registration
        self.readdressed: set[str] = set()  # slices an address of changed since the last push (peers.py)
        self.peer_book: dict[str, peers.Published] = {}  # slice -> its slivers' addresses as told to nodes (peers.py)
        self.peers_due: set[str] = set()  # nodes that asked for whole sets within a period of their last push (peers.resend)
        self.deleting: dict[str, dict[str, int]] = {}  # deleted slice -> {node: generation it must apply}
        self._events: list[tuple[str, str | None, str | None, float, str, str]] = []
        self.retrying: set[str] = set()  # slivers that could not be re-placed, waiting to retry
        self.gave_up: set[str] = set()  # failed slivers whose restart policy gave up (healing looks at them)
        self._flush_warned = 0.0
        #: The largest desired-set generation given to any node (the store keeps it too:
        #: ``Store.gave_generations``); a node new to this controller starts above it.
        self.generations_given = store.generation_floor()
        self.applied = 0  # changes of desired sets applied (``apply_generations``): one counts as a change of placement
        self._load()

    # ---- start-up ---------------------------------------------------------------------------

    def _load(self) -> None:
        load(self)

    def _quarantine(self, kind: str, name: str, data: object, reason: str) -> None:
        """Set a stored record aside (kept, never lost) so the controller serves the rest."""
        log.error("quarantining %s %r from %s: %s (kept in its quarantine table; nothing else is affected)", kind, name, self.store.path, reason)
        with self.store.transaction():
            self.store.quarantine(kind, name, data, reason)

    # ---- placement index --------------------------------------------------------------------

    def recount(self, rec: NodeRecord) -> None:
        """Sum a node's holdings from its slivers (at start-up, after its overheads change)."""
        total = Resources()
        for sid in rec.slivers:
            sl = self.slivers[sid]
            if not sl.released:
                total = total + sliver_cost(sl.spec.resources, sl.spec.isolation, rec.overhead)
        rec.used = total

    def index(self) -> NodeIndex:
        return complete(self.index_steps())

    def index_steps(self) -> Generator[None, None, NodeIndex]:
        """The placement index, rebuilt if a node's registration dropped it: the nodes' views
        ``VIEWS_CHUNK`` per step (at 10,000 nodes ~0.1 s in all here, ~0.3 s under load),
        then the index from them in steps too (``NodeIndex.built_steps``). A node whose
        record changed meanwhile (its info, state, holdings or admin state: each is
        replaced, never changed in place) is viewed again at the end: its state, admin state
        and holdings are set in the index, or, if its facts changed or nodes came or went,
        the index is built again at once. So it is as fresh as one built in one go."""
        if self._index is not None:
            return self._index
        made: dict[str, tuple[tuple[object, ...], NodeView]] = {}
        for i, rec in enumerate(list(self.registry), 1):
            made[rec.name] = (self._viewed(rec), self._view(rec))
            if i % VIEWS_CHUNK == 0:
                yield
        index = yield from NodeIndex.built_steps(view for _, view in made.values())
        yield
        if self._index is not None:
            return self._index  # another request built it meanwhile (and it has been kept up since)
        nodes = self.registry.nodes
        changed = [rec for name, rec in nodes.items() if (got := made.get(name)) is None or got[0] != self._viewed(rec)]
        if len(nodes) != len(made) or any(rec.name not in made or made[rec.name][0][0] != rec.info for rec in changed):
            index = NodeIndex(self._view(rec) for rec in self.registry)  # facts changed, or nodes came or went: rare
        else:
            for rec in changed:
                index.refresh(self._view(rec))
        self._index = index
        return index

    @staticmethod
    def _viewed(rec: NodeRecord) -> tuple[object, ...]:
        """What a node's view is made from."""
        return (rec.info, rec.state, rec.used, rec.admin)

    @staticmethod
    def _view(rec: NodeRecord) -> NodeView:
        return node_view(rec.info, up=rec.state == "up", used=rec.used, schedulable=rec.admin == "active", overhead=rec.overhead)

    def charge(self, sp: SliverSpec, node: str, sign: int) -> None:
        """Charge (``sign`` -1: release) a sliver of ``sp`` on ``node``."""
        self._charge_records(sp, [node], sign)
        if self._index is not None and node in self._index.pos:
            self._index.charge(node, sp.resources, sign, isolation=sp.isolation)

    def charge_many(self, sp: SliverSpec, nodes: list[str], sign: int) -> None:
        """``charge`` of a sliver of ``sp`` on each of ``nodes`` (a slice's slivers differ in
        their id only): the index in one vector operation per resource, not 10,000 updates."""
        self._charge_records(sp, nodes, sign)
        if self._index is not None:
            self._index.charge_many(nodes, sp.resources, sign, isolation=sp.isolation)

    def _charge_records(self, sp: SliverSpec, nodes: list[str], sign: int) -> None:
        # A sliver's cost is worked out once per distinct overhead (nodes of a kind share it),
        # and each node gets one new vector: 10,000 nodes in a few milliseconds.
        costs: dict[Resources | None, Resources] = {}
        get = self.registry.nodes.get
        for node in nodes:
            rec = get(node)
            if rec is not None:
                extra = rec.overhead.get(sp.isolation)
                cost = costs.get(extra)
                if cost is None:
                    cost = costs[extra] = sliver_cost(sp.resources, sp.isolation, rec.overhead)
                rec.used = rec.used + cost if sign > 0 else rec.used.less(cost)

    # ---- nodes ------------------------------------------------------------------------------

    def register(self, info: NodeInfo, peer: bytes, statuses: list[SliverStatus], generation: int, now: float, address: str = "") -> NodeRecord:
        held = old.info if (old := self.registry.nodes.get(info.name)) is not None else None
        rec, changed = self.registry.register(info, peer, now)
        same_info = rec.info is held  # the registry keeps an equal info: compared once, there
        if old is None:
            # Above any generation given before: a node removed and back (its agent still
            # holding what it was last given) would otherwise ignore every set until the
            # count passed that, as an old push overtaken by a newer one.
            rec.generation = self.generations_given + 1
        rec.address = address
        if changed:  # a node that registers again as it was (its retries, queued while a big cluster starts) changes no row
            self._node_upserts[rec.name] = rec  # written by flush(), one transaction per loop turn
            if same_info and self._index is not None and rec.name in self._index.pos:
                self._index.set_up(rec.name, True)  # back up as it was: one flag, not a new index (~0.3 s at 10,000 nodes)
            else:
                self._index = None
            self._room_changed()
        self.apply_report(rec, generation, statuses)
        self.resync(rec)  # a new connection: whatever was in flight to the last one is not
        return rec

    def resync(self, rec: NodeRecord) -> None:
        """``rec`` is sent its whole set next, at once: it registered, or holds another set
        than the one its last changes were based on (``Report.resync``)."""
        rec.pushed, rec.sent = -1, None
        self.held_nodes.pop(rec.name, None)
        self.dirty_nodes[rec.name] = None

    def hold(self, rec: NodeRecord, now: float) -> bool:
        """Whether ``rec``'s next set waits (it moves to ``held_nodes``): the last one sent is
        not applied yet, and was sent less than a heartbeat period ago (a set or its report
        lost: then it goes again, as a heartbeat that shows it behind would have it)."""
        if rec.pushed <= rec.applied or now - rec.last_push >= rec.period:
            self.held_nodes.pop(rec.name, None)
            return False
        self.held_nodes[rec.name] = None
        return True

    def node_seen(self, rec: NodeRecord, peer: bytes, now: float, *, told: bool = True) -> None:
        if self.registry.seen(rec, peer, now, told=told):
            log.info("node %s is up again", rec.name)
            self._node_state_changed(rec)
            self._room_changed()

    def _room_changed(self) -> None:
        """A node came (back) up: slivers waiting to be re-placed may fit now, so try soon."""
        for sid in self.retrying:
            if sid in self.slivers:
                self.slivers[sid].retry_at = 0.0
        self.retrying.clear()

    def sweep(self, now: float) -> list[NodeRecord]:
        gone = self.registry.sweep(now)
        for rec in gone:
            log.warning("node %s is down: no heartbeat for %.1fs", rec.name, now - rec.last_seen)
            self._went_down(rec, f"node {rec.name} is down")
        return gone

    def _done_deleting(self, rec: NodeRecord, *, gone: bool = False) -> None:
        """``rec`` applied a generation, stopped or went away: the deleted slices it no longer
        holds up stop waiting for it. Kept as it happens, so a wait's progress is a count, not
        a look at every node of a 10,000-node slice in each turn it changes."""
        done = []
        for name, nodes in self.deleting.items():
            g = nodes.get(rec.name)
            if g is not None and (gone or not _owes(rec, g)):
                del nodes[rec.name]
                self.touched.add(name)
                if not nodes:
                    done.append(name)
        for name in done:  # deleted everywhere: what is left of it here would be walked by every report
            del self.deleting[name]

    def _went_down(self, rec: NodeRecord, why: str) -> None:
        self._done_deleting(rec)
        self._node_state_changed(rec)
        for sid in list(rec.slivers):
            sl = self.slivers[sid]
            if sl.moving_to == rec.name:  # the target of a move died: the sliver stays where it runs
                moves.abort_move(self, sl, self.clock(), why)
            elif sl.moving_to is not None and sl.move is not None and sl.move.sent is None:
                moves.abort_move(self, sl, self.clock(), f"its source died before sending it: {why}")
                if not sl.released:
                    self.set_sliver(sid, "lost", why)
            elif not sl.released:
                self.set_sliver(sid, "lost", why)

    def goodbye(self, rec: NodeRecord, reason: str, now: float) -> None:
        """The node's agent stopped cleanly: ``stopped``, not a missed-heartbeat ``down``."""
        rec.peer = None
        if rec.state == "up":
            self.registry.mark(rec, "stopped")
            rec.down_since = now
            log.info("node %s stopped: %s", rec.name, reason)
            self._went_down(rec, f"node {rec.name}'s agent stopped ({reason}); its slivers are not watched")
        elif rec.state == "down":  # the goodbye came after the sweep: it explains the silence
            self.registry.mark(rec, "stopped")
            log.info("node %s stopped: %s", rec.name, reason)
            self._node_state_changed(rec)

    def revoke_node(self, name: str, now: float) -> None:
        """The node's key was revoked: its connection is forgotten and it counts as down now."""
        rec = self.registry.get(name)
        if rec is None:
            return
        rec.peer = None
        if rec.state == "up":
            self.registry.mark(rec, "down")
            self._went_down(rec, f"node {name}'s key was revoked")

    def _node_state_changed(self, rec: NodeRecord) -> None:
        self._node_upserts[rec.name] = rec  # written by the next flush, with the rest
        if self._index is not None and rec.name in self._index.pos:
            self._index.set_up(rec.name, rec.state == "up")

    def apply_report(self, rec: NodeRecord, generation: int, statuses: list[SliverStatus]) -> None:
        """Fold what an agent reports into ours. Agents send only changes (and say ``lost``
        themselves for a desired sliver they do not hold), so silence means "as before"."""
        before = rec.applied
        rec.applied = max(rec.applied, generation) if generation <= rec.generation else rec.applied
        if rec.applied != before:
            if self.deleting:
                self._done_deleting(rec)
            if rec.applied >= rec.pushed and rec.name in self.held_nodes:
                del self.held_nodes[rec.name]
                self.dirty_nodes[rec.name] = None  # what changed while its last set was on its way
        for st in statuses:
            sl = self.slivers.get(st.id)
            if sl is None:
                continue  # the agent will destroy it once it applies our desired set
            if sl.moving_to == rec.name:  # the new copy of a sliver being moved here
                if st.state == "running":
                    moves.complete_move(self, sl, self.clock(), st.address)
                elif st.state in ("failed", "lost", "exited"):
                    moves.abort_move(self, sl, self.clock(), st.reason or st.state)
                elif sl.move is not None and st.migration is not None and st.migration.phase == "listening" and rec.address:
                    # where it listens: its connection's address (not one it claims), its ports
                    endpoint = f"{rec.address}:{st.migration.port}"
                    disk = f"{rec.address}:{st.migration.disk_port}" if st.migration.disk_port else None
                    if st.migration.port and (sl.move.endpoint, sl.move.disk_endpoint) != (endpoint, disk):
                        moves.target_ready(self, sl, endpoint, disk)
                continue
            if sl.node != rec.name:
                continue
            if sl.move is not None and st.migration is not None and moves.source_said(self, sl, st):
                continue
            if st.usage is not None:
                sl.usage = st.usage
            if st.code is not None:
                sl.code_note = st.code
            sl.restarts = st.restarts
            if st.address is not None and st.address != sl.address:
                sl.address = st.address
                peers.address_changed(self, sl.spec.slice)
            self.set_sliver(st.id, st.state, st.reason, gave_up=st.gave_up)

    def set_sliver(self, sid: str, state: str, reason: str | None, *, gave_up: bool = False) -> None:
        sl = self.slivers[sid]
        if state == "running":
            reason = None
        sl.gave_up = gave_up
        if gave_up and state == "failed":
            self.gave_up.add(sid)
        else:
            self.gave_up.discard(sid)
        self._hold_or_release(sl, state)
        if (sl.state, sl.reason) == (state, reason):
            return
        owner = self.slices.get(sl.spec.slice)
        if owner is not None:
            owner.counted(sl.state, state)
            self.touch(owner)
            if state != sl.state and (state != "running" or len(owner.slivers) <= EVENTS_PER_SLIVER_UP_TO):
                self.event(owner.name, sid, sl.node, {"running": "started"}.get(state, state), reason or "")
        sl.state, sl.reason = state, reason
        self._sliver_updates[sid] = (state, reason)
        self._slice_updates.add(sl.spec.slice)

    def _hold_or_release(self, sl: SliverRecord, state: str) -> None:
        """Capacity follows reality: a sliver that will not run again (it exited and is not
        restarted, or failed for good with no move left) holds nothing; one that runs again
        holds its reservation again."""
        policy = sl.spec.restart
        done = state == "exited" and not policy.wants_restart(state)
        spent = state == "failed" and sl.gave_up and sl.moves >= policy.moves
        if (done or spent) and not sl.released:
            sl.released = True
            self.charge(sl.spec, sl.node, -1)
        elif not (done or spent) and sl.released and state in ("pending", "running"):
            sl.released = False
            self.charge(sl.spec, sl.node, +1)

    def event(self, slice_name: str, sliver: str | None, node: str | None, kind: str, detail: str = "") -> None:
        """One line of the slice's timeline, written with the next flush."""
        self._events.append((slice_name, sliver, node, self.clock(), kind, detail[:512]))

    def touch(self, sl: SliceRecord) -> None:
        """The slice changed: its waiters are looked at after this turn."""
        self.changes += 1
        sl.version = self.changes
        self.touched.add(sl.name)

    def take_touched(self) -> set[str]:
        out, self.touched = self.touched, set()
        return out

    def progress(self, name: str) -> Progress:
        """Where a slice stands, for waits; a deleted one until every up node removed it."""
        sl = self.slices.get(name)
        if sl is None or sl.state == "expired":
            left = self.deleting.get(name)
            if left:
                return Progress(name=name, state="deleting", placed=len(left), version=self.changes)
            return Progress(name=name, state="deleted", settled=True, version=self.changes)
        return Progress(
            name=name,
            state=sl.state,
            running=sl.running,
            wanted=sl.spec.placement.count,
            placed=len(sl.slivers),
            settled=lifecycle.settled(sl.state),
            version=sl.version,
        )

    def flush(self, rows: int | None = None) -> None:
        """Write batched node, sliver and slice state changes in one transaction; ``rows``:
        at most that many sliver states, the oldest (the loop's flush: a 10,000-sliver slice
        coming up reports thousands of states in one turn, ~3 us each to write, and
        written at once they held the loop 40-80 ms on a loaded machine). The rest wait for
        the next turn, which does not wait for messages meanwhile (``unwritten``).

        Memory shows each change at once (reads stay true); if the store refuses the write
        (a full disk), nothing is dropped: the changes stay pending, the next turn tries
        again, and the controller keeps serving meanwhile."""
        self.unwritten = False
        if not self._sliver_updates and not self._slice_updates and not self._node_upserts and not self._slice_writes and not self._events:
            return
        for name in self._slice_updates:
            sl = self.slices.get(name)
            if sl is None or sl.state == "expired":
                continue
            # From the counts while every sliver runs or starts (each report of a 10,000-sliver
            # slice coming up would otherwise look at all of them, every turn).
            state = sl.quick_state() or lifecycle.slice_state(self.slivers[s].outlook for s in sl.slivers)
            if state != sl.state:
                sl.state = state
                self._slice_writes.add(name)
                self.touch(sl)
        self._slice_updates.clear()
        pending = self._sliver_updates
        taken = list(pending.items() if rows is None or len(pending) <= rows else itertools.islice(pending.items(), rows))
        updates = [(sid, s, r) for sid, (s, r) in taken if sid in self.slivers]
        try:
            with self.store.transaction():
                self._write_node_upserts()
                self.store.set_sliver_states(updates)
                for name in self._slice_writes:
                    if name in self.slices:
                        self.store.set_slice(name, state=self.slices[name].state)
                self.store.add_events(self._events)
        except StoreError as exc:
            now = time.monotonic()
            if now - self._flush_warned > 30:
                self._flush_warned = now
                log.error("%s; %d state changes wait to be written", exc.reason, len(updates) + len(self._slice_writes) + len(self._node_upserts))
            return
        self._slice_writes.clear()
        self._events.clear()
        if len(taken) == len(pending):
            pending.clear()
        else:
            for sid, _ in taken:
                del pending[sid]
            self.unwritten = True
        self._slice_updates.clear()
        self._node_upserts.clear()

    def _write_node_upserts(self) -> None:
        """Registrations not yet written; inside a transaction, before rows that refer to them."""
        for rec in self._node_upserts.values():
            self.store.upsert_node(rec.info.to_wire(), rec.state, rec.generation, rec.registered)

    def desired_for(self, rec: NodeRecord) -> list[SliverSpec]:
        out = []
        for sid in sorted(rec.slivers):
            sl = self.slivers[sid]
            out.append(sl.spec if sl.move is None else moves.part_in_move(sl, rec.name))
        return out

    # Every change below writes the store first and touches memory only once the transaction
    # has committed, so a failed write leaves no half-made or half-removed slice behind.

    def next_generations(self, nodes: set[str]) -> dict[str, int]:
        return {n: self.registry.nodes[n].generation + 1 for n in nodes if n in self.registry.nodes}

    def apply_generations(self, generations: dict[str, int]) -> None:
        self.applied += 1  # every change of what a node should run comes here
        for name, generation in generations.items():
            self.registry.nodes[name].generation = generation
        self.generations_given = max(self.generations_given, *generations.values(), 0)
        self.dirty_nodes.update(dict.fromkeys(generations))

    def _nodes_of(self, sl: SliceRecord, members: list[SliverRecord] | None = None) -> set[str]:
        """Every node holding one of the slice's slivers (``members``, if the caller has them):
        the target of a move too."""
        if members is None:
            members = [self.slivers[s] for s in sl.slivers]
        nodes = {m.node for m in members}
        nodes.update(m.moving_to for m in members if m.moving_to is not None)
        return nodes

    # ---- slices -----------------------------------------------------------------------------

    def plan(self, spec: SliceSpec, *, explain: bool = False) -> Plan:
        return complete(self.plan_steps(spec, explain=explain))

    def plan_steps(self, spec: SliceSpec, *, explain: bool = False) -> Generator[None, None, Plan]:
        index = yield from self.index_steps()
        result = yield from place_steps(spec, index, explain=explain)
        if isinstance(result, Refusal):  # the reason, then the changes that would fit (controller/relax.py)
            raise Infeasible(result.message, details=result.details())
        return result

    def _replacing(self, spec: SliceSpec, request_id: str | None) -> tuple[SliceRecord | None, bool]:
        """(the slice of that name a create replaces, whether the create is a retry of the one
        that made it); raises if the name is taken."""
        old = self.slices.get(spec.name)
        if old is not None:
            if request_id is not None and old.request_id == request_id and old.owner == spec.owner:
                return old, True
            if old.state != "expired":
                raise AlreadyExists(f"slice {spec.name!r} already exists (owner {old.owner or '-'}, state {old.state})")
        return old, False

    def create_steps(
        self,
        raw: dict[str, Any],
        owner: str | None,
        request_id: str | None,
        now: float,
        *,
        dry_run: bool = False,
        site: str | None = None,
        check: Callable[[SliceSpec, Plan], None] | None = None,
        note: Callable[[], None] | None = None,
    ) -> Generator[None, None, tuple[SliceSpec, SliceRecord | None, Plan]]:
        """Place and store a slice (or only plan it, for a dry run), in steps (controller/steps.py).

        The placement and the rows are made over several steps. A big slice's rows are then
        written in parts, as an unfinished slice (store.py); the slice is made in the store in
        one step, at once; in memory its capacity is then held over a few steps
        (``_charge_steps``) and the slice is made, and its nodes told, in the last. Between
        steps the loop serves other requests: while ``changing`` is set, the server holds back
        every other change a user asks for, and re-placement waits, so the capacity this plan
        counts on stays free; only frees (a slice expiring, a sliver given up) may happen
        meanwhile, and the slice a create replaces is looked at again before the write.
        ``check`` may refuse the planned slice (quotas) before anything is written; ``note``
        writes inside the same transaction as the slice (the audit entry)."""
        spec = parse_spec(raw, default_owner=owner)
        old, retry = self._replacing(spec, request_id)
        if retry:
            return spec, old, Plan((), (), 0)  # a retry of the request that created it
        if dry_run:
            plan = yield from self.plan_steps(spec, explain=True)
            if check is not None:
                check(spec, plan)
            return spec, None, plan
        with self.held():
            return (yield from self._create(spec, raw, request_id, now, site, check, note))

    def _create(
        self,
        spec: SliceSpec,
        raw: dict[str, Any],
        request_id: str | None,
        now: float,
        site: str | None,
        check: Callable[[SliceSpec, Plan], None] | None,
        note: Callable[[], None] | None,
    ) -> Generator[None, None, tuple[SliceSpec, SliceRecord | None, Plan]]:
        plan = yield from self.plan_steps(spec)
        if len(plan.assignments) > ROWS_CHUNK:
            yield  # the plan's last step made 10,000 assignments: its rows start in a step of their own
        if check is not None:
            check(spec, plan)
        rec = SliceRecord(spec, raw, spec.owner, now, now + spec.lifetime, request_id, site=site)
        row = SliceRow(spec.name, spec.owner, raw, rec.state, rec.created, rec.expires, request_id, site)
        rows = []
        new: list[SliverRecord] = []
        template = spec.sliver(f"{spec.name}-0")
        # The slivers of a slice differ only in their id: one walk and one JSON text, not 10,000.
        head, _, tail = json.dumps({**template.to_wire(), "id": ID_MARK}).partition(json.dumps(ID_MARK))
        for i, (a, sid) in enumerate(zip(plan.assignments, new_sliver_ids(spec.name, len(plan.assignments), self.slivers), strict=True), 1):
            sp = replaced(template, id=sid)
            rows.append(SliverRow(sp.id, spec.name, a.request, "pending", "waiting for the node agent", f'{head}"{sp.id}"{tail}', a.node, sp.cpu, sp.memory, sp.disk))
            new.append(SliverRecord(sp, a.node, a.request))
            if i % ROWS_CHUNK == 0:
                yield
        planned = {a.node for a in plan.assignments}
        in_parts = len(rows) > PART_ROWS and self._replacing(spec, request_id)[0] is None
        try:
            if in_parts:
                with self.store.transaction(part=True):
                    self._write_node_upserts()  # the nodes its rows refer to, if new since the last flush
                self._node_upserts.clear()
                yield from self.store.write_in_parts(row, rows)
            # From here to the end, no step: what was planned is checked against now, and written.
            old, _ = self._replacing(spec, request_id)  # an expired slice it replaces may have gone meanwhile
            gone = planned - self.registry.nodes.keys()
            if gone:
                raise Busy(f"{len(gone)} of the planned nodes were removed while slice {spec.name} was being placed (e.g. {min(gone)}): try again")
            if in_parts and old is not None:  # cannot be while other changes wait; never written over
                raise Busy(f"slice {spec.name} was created by another request meanwhile")
            generations = self.next_generations(planned | (self._nodes_of(old) if old else set()))
            faults.hit("create.before_store")
            with self.store.transaction():
                self._write_node_upserts()
                if old is not None:
                    self.store.delete_slice(old.name)
                if in_parts:
                    self.store.set_slice(spec.name, state=rec.state)  # made: no longer unfinished
                else:
                    self.store.insert_slice(row, rows)
                self.store.gave_generations(generations.values())
                if note is not None:
                    note()
        except BaseException:
            if in_parts:
                self.drop_unfinished(spec.name)
            raise
        faults.hit("create.after_store")
        self._node_upserts.clear()
        if old is not None:
            self._release(old)
            del self.slices[old.name]
        # Its capacity is held over the next steps (other changes wait: ``changing``), before
        # any node is told of it, so a report of a new sliver finds its share held.
        yield from self._charge_steps([(template, [s.node for s in new])], +1)  # the slivers differ in their id only
        # 10,000 records in this step: bulk operations where they serve (every new one is pending)
        ids = [r.id for r in rows]
        self.slivers.update(zip(ids, new, strict=True))
        rec.slivers.extend(ids)
        rec.counted(None, "pending", len(new))
        nodes = self.registry.nodes
        for sid, sliver in zip(ids, new, strict=True):
            nodes[sliver.node].slivers.add(sid)
        self.apply_generations(generations)
        self.slices[spec.name] = rec
        peers.forget(self, spec.name)
        self.deleting.pop(spec.name, None)
        self.touch(rec)
        unknown = f"; its slivers are not told each other's addresses (over {peers.MAX_PEERS:,} slivers: docs/networking.md)" if not peers.distributed(self, spec.name) else ""
        self.event(spec.name, None, None, "created", f"{len(new)} slivers placed on {len(planned)} nodes{unknown}")
        return spec, rec, plan

    def drop_unfinished(self, name: str | None = None) -> None:
        """Remove what changes in parts left unfinished: a create that gave up (``name``), or
        whatever a crash left (all, at start-up). If the store refuses now, the rows wait for
        the name's next create or the next start, and are never loaded meanwhile
        (``Store.slices``)."""
        try:
            with self.store.transaction(part=True):
                for dropped in self.store.drop_unfinished(name):
                    log.warning("slice %s was left half written or half deleted; its rows are removed (it does not exist)", dropped)
        except StoreError as exc:
            log.warning("slices left unfinished stay in the store for now: %s", exc)

    def _release(self, sl: SliceRecord) -> None:
        """In memory only: the slice's slivers leave their nodes and free their capacity."""
        complete(self._charge_steps(self._leave(sl), -1))

    def _leave(self, sl: SliceRecord) -> list[tuple[SliverSpec, list[str]]]:
        """In memory only: the slice's slivers leave their nodes (and the cluster). Returns
        the capacity they held, each sliver's cost with its nodes, for ``_charge_steps`` to
        free: a report of one of them finds no sliver from now on, so none is freed twice."""
        peers.forget(self, sl.name)
        freed: dict[tuple[Resources, str], tuple[SliverSpec, list[str]]] = {}  # nodes per cost
        get, pop, updates = self.registry.nodes.get, self.slivers.pop, self._sliver_updates
        last: tuple[Resources | None, str] = (None, "")
        nodes: list[str] = []
        for sid in sl.slivers:  # 10,000 of them in the one step a delete must make whole
            sliver = pop(sid)
            node = get(sliver.node)
            if node is not None:
                node.slivers.discard(sid)
            spec = sliver.spec
            if spec.resources is not last[0] or spec.isolation != last[1]:  # a slice's slivers share one cost
                last = (spec.resources, spec.isolation)
                nodes = freed.setdefault((spec.resources, spec.isolation), (spec, []))[1]
            if not sliver.released:  # one that exited for good freed its share then
                nodes.append(sliver.node)
            if sliver.moving_to is not None:  # the new copy of a move leaves its node too
                target = get(sliver.moving_to)
                if target is not None:
                    target.slivers.discard(sid)
                nodes.append(sliver.moving_to)
            updates.pop(sid, None)
            self.gave_up.discard(sid)
        sl.slivers = []
        sl.running = sl.pending = 0
        return list(freed.values())

    def _charge_steps(self, costs: list[tuple[SliverSpec, list[str]]], sign: int) -> Generator[None, None, None]:
        """``charge_many`` of each sliver cost on its nodes, ``CHARGE_CHUNK`` nodes a step:
        the records of 10,000 nodes were 20 ms of one step, and a 10,000-sliver create or
        delete held the loop 50-120 ms in its one step that had to be whole. When they are
        several, each chunk is a step of its own (not added to the step before or after)."""
        alone = sum(len(nodes) for _, nodes in costs) > CHARGE_CHUNK
        first = True
        for spec, nodes in costs:
            for i in range(0, len(nodes), CHARGE_CHUNK):
                if alone or not first:
                    yield
                first = False
                self.charge_many(spec, nodes[i : i + CHARGE_CHUNK], sign)
        if alone:
            yield

    def delete(self, name: str, note: Callable[[], None] | None = None) -> list[tuple[str, str]]:
        return complete(self.delete_steps(name, note))

    def delete_steps(self, name: str, note: Callable[[], None] | None = None) -> Generator[None, None, list[tuple[str, str]]]:
        """Delete a slice: in the store and in memory in one step; what its slivers held is
        freed over the next steps (``_charge_steps``). A big slice's rows are then removed in
        parts (it is stored as ``deleting`` until they are gone). Meanwhile other changes
        wait, so that none takes its name, or counts on capacity not yet freed. Returns the
        slivers released, (id, node), which the request's summary keeps too (its answer after
        a crash).

        A big slice's slivers and nodes are looked up in a step before that one (10,000:
        ~15 ms of the 35-38 ms the one step took): unless a placement changed anywhere
        meanwhile (``applied``: a move ended, the slice expired), they are as looked up."""
        sl = self.get(name)
        with self.held():
            members, released, nodes = self._members_of(sl)
            if len(members) > WALK_ALONE:
                applied = self.applied
                yield
                if self.applied != applied:
                    members, released, nodes = self._members_of(sl)
            in_parts = len(members) > PART_ROWS
            generations = self.next_generations(nodes)
            with self.store.transaction(summary={"slivers": len(released), "released": released}):
                if in_parts:
                    self.store.set_slice(name, state=DELETING)
                else:
                    self.store.delete_slice(name)
                self.store.gave_generations(generations.values())
                if note is not None:
                    note()
            faults.hit("delete.after_store")
            freed = self._leave(sl)
            del self.slices[name]
            self.apply_generations(generations)
            self._gone(name, generations)
            yield from self._charge_steps(freed, -1)  # what it held is free once these steps are done
            if in_parts:
                yield  # the first part in a step of its own
                try:
                    yield from self.store.delete_in_parts(name)
                except StoreError as exc:  # deleted all the same: the rows go at the name's next use, or the next start
                    log.warning("slice %s is deleted, but removing its rows stopped: %s", name, exc)
        return released

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Other changes wait while it is open (``changing``): a create or delete made in
        steps, and a change whose answer is still being made in steps after it, so that one
        held back behind it is answered after it."""
        self.changing += 1
        try:
            yield
        finally:
            self.changing -= 1

    def _members_of(self, sl: SliceRecord) -> tuple[list[SliverRecord], list[tuple[str, str]], set[str]]:
        """The slice's slivers, each (id, node), and every node holding one (``_nodes_of``)."""
        members = [self.slivers[s] for s in sl.slivers]  # one walk for all three (10,000: ~5 ms each)
        return members, list(zip(sl.slivers, [m.node for m in members], strict=True)), self._nodes_of(sl, members)

    def _gone(self, name: str, generations: dict[str, int]) -> None:
        """A slice left its nodes: ``delete --wait`` waits until each up node applied that."""
        nodes = self.registry.nodes
        owing = {n: g for n, g in generations.items() if (r := nodes.get(n)) is not None and _owes(r, g)}
        if owing:
            self.deleting[name] = owing
        self.changes += 1
        self.touched.add(name)

    def renew(self, name: str, seconds: int, now: float, note: Callable[[], None] | None = None) -> tuple[SliceRecord, bool]:
        sl = self.get(name)
        if sl.state == "expired":
            raise BadRequest(f"slice {name!r} has expired; create it again")
        if seconds <= 0:
            raise BadRequest("renewal must be longer than zero")
        expires, capped = lifecycle.renewed_expiry(sl.expires, seconds, now, MAX_LIFETIME)
        with self.store.transaction(summary={"expires": expires, "capped": capped}):
            self.store.set_slice(name, expires=expires)
            if note is not None:
                note()
        faults.hit("renew.after_store")
        sl.expires = expires
        self.touch(sl)
        self.event(name, None, None, "renewed", f"by {seconds} s" + (" (capped at 56 days)" if capped else ""))
        return sl, capped

    def expire_due(self, now: float) -> list[SliceRecord]:
        due = [sl for sl in self.slices.values() if sl.expires <= now and sl.state != "expired"]
        for sl in due:
            log.info("slice %s expired; destroying its %d slivers", sl.name, len(sl.slivers))
            generations = self.next_generations(self._nodes_of(sl))
            with self.store.transaction():
                self.store.release_slice(sl.name, "expired")
                self.store.gave_generations(generations.values())
            self._release(sl)
            sl.state = "expired"
            self.apply_generations(generations)
            self._gone(sl.name, generations)
        return due

    def set_admin(self, rec: NodeRecord, admin: str) -> None:
        with self.store.transaction():
            self.store.set_node_admin(rec.name, admin)
        rec.admin = admin
        if self._index is not None and rec.name in self._index.pos:
            self._index.set_schedulable(rec.name, admin == "active")

    def vacate(self, rec: NodeRecord, now: float, *, force: bool) -> list[str]:
        """Before a node is removed: with ``force``, move its slivers now (no make-before-
        break); returns the slivers it still holds (none when it may go)."""
        if force and rec.slivers:
            self.set_admin(rec, "draining")
            for sid in sorted(rec.slivers):
                sl = self.slivers[sid]
                if sl.moving_to == rec.name:
                    moves.abort_move(self, sl, now, f"node {rec.name} is being removed")
            healing.evict(self, rec.name, now, f"node {rec.name} is being removed")
        return sorted(rec.slivers)

    def remove_node(self, rec: NodeRecord) -> None:
        with self.store.transaction():
            self.store.delete_node(rec.name)
        self.registry.remove(rec.name)
        self._done_deleting(rec, gone=True)
        self._index = None
        self._node_upserts.pop(rec.name, None)
        self.dirty_nodes.pop(rec.name, None)
        self.held_nodes.pop(rec.name, None)

    def get_node(self, name: str) -> NodeRecord:
        rec = self.registry.get(name)
        if rec is None:
            raise NotFound(f"no node named {name!r}")
        return rec

    def get(self, name: str) -> SliceRecord:
        sl = self.slices.get(name)
        if sl is None:
            raise NotFound(f"no slice named {name!r}")
        return sl

    def request_of(self, sliver: SliverRecord) -> LocationRequest:
        return self.slices[sliver.spec.slice].spec.placement.requests()[sliver.request]


def _owes(rec: NodeRecord, generation: int) -> bool:
    """Whether a deleted slice's wait counts ``rec``: up, and not yet past ``generation``."""
    return rec.state == "up" and rec.applied < generation
