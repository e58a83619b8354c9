"""The controller's loop: two ROUTER sockets (agents', users'), one poller, timers; no threads.

Each turn serves the users' socket first and again between every few agent messages
(``sockets.py``), drains the agents' socket for at most ``batch_budget``, handles every message
(exactly one reply per request, even when the handler raised), builds big replies a step at a
time, writes batched state in one transaction, pushes desired sets to changed nodes (oldest
change first, for at most ``batch_budget``; the rest next turn) and runs the liveness and lease
timers. docs/architecture.md, "Staying responsive", says why each bound is where it is.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import GeneratorType
from typing import TYPE_CHECKING, Any, cast

from controller import access, api, healing, peers
from controller.bootstrap import first_admin, server_keypair
from controller.cluster import FLUSH_ROWS, Cluster
from controller.codepush import CodePusher
from controller.codeswarm import Swarm
from controller.contentstore import ContentStore
from controller.deltas import delta
from controller.keyring import KeyRing
from controller.registry import Registry
from controller.relay import Deferred, Relay
from controller.replies import Applied, Replies
from controller.settings import ControllerSettings
from controller.sockets import Sockets, on_users_socket
from controller.steps import Job, Stepped, Steps
from controller.store import Store
from controller.truststore import TrustStore
from controller.userwaits import UserWaits
from controller.waits import Waits
from slices import faults, memory
from slices import protocol as p
from slices.codec import BadBody, Envelope, KeptPacked, Packed, VersionMismatch, decode, encode
from slices.errors import ProtocolError, SliceMeshError
from slices.protocol import Desired, Error, Message, Ok, Register
from slices.protocol.agents import DESIRED_PART
from slices.ratelimit import PeerWarnings, RateLimit
from slices.transport import Poller, Waker
from slices.wire import packable

if TYPE_CHECKING:
    from slices.model import SliverSpec

log = logging.getLogger(__name__)

p.load_all()
#: Each request type's reply record, by wire name: what a handler must return.
REPLIES: dict[str, type] = {name: cls.REPLY for name, cls in p.REGISTRY.items() if cls.REPLY is not None}

SENDER = "controller"
BEHIND_SAY_EVERY = 10.0  # seconds between warnings that the agents' queue is not being emptied
MAX_BATCH = 5000  # messages handled per turn before timers and pushes get a chance
BATCH_CHECK = 32  # agent messages between looks at the clock (batch_budget) and at the users' socket
USER_SLICE = 0.003  # seconds of user messages a turn may always have (the first message always fits)
USER_SHARE = 0.25  # past that, users get at most this share of a busy turn: heartbeats come first in share
KEPT_SPECS = 50_000  # sliver specs kept packed for pushes (then all dropped and packed again)
PUSH_CHECK = 16  # desired sets pushed between looks at the clock and at the users' socket
MAX_PARKED = 1000  # changes held back behind a create in steps (``Server._park``)
#: Requests that change state: their replies are remembered so a retry is not applied twice.
MUTATING: frozenset[type[Message]] = frozenset(
    {
        p.CreateSlice,
        p.DeleteSlice,
        p.RenewSlice,
        p.AcceptKey,
        p.RejectKey,
        p.RevokeKey,
        p.TrustKeys,
        p.MakeToken,
        p.AddUser,
        p.RemoveUser,
        p.SetSite,
        p.RemoveSite,
        p.Orphans,
        p.NodeAdmin,
        p.MigrateSlice,
    }
)
#: Requests whose replies and pushes are fault points (``slices/faults.py``), by verb.
FAULT_VERBS: dict[type[Message], str] = {p.CreateSlice: "create", p.DeleteSlice: "delete", p.RenewSlice: "renew"}
FAULT_VERBS_BY_NAME = {cls.TYPE: verb for cls, verb in FAULT_VERBS.items()}


@dataclass
class Stats:
    handled: int = 0
    dropped: int = 0
    errors: int = 0
    pushes: int = 0


class Server:
    def __init__(self, settings: ControllerSettings, *, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.clock = clock
        self.store = Store(settings.db, new_cluster=settings.new_cluster)
        registry = Registry(period=settings.heartbeat_period, rate=settings.heartbeat_rate, misses=settings.liveness_misses)
        self.keyring = KeyRing(
            TrustStore(self.store), max_pending=settings.max_pending_keys, unknown_rate=settings.unknown_key_rate, clock=clock, on_agents=lambda n: setattr(registry, "expected", n)
        )
        self.cluster = Cluster(self.store, registry, clock)
        registry.grace(clock(), until=clock() + settings.restart_grace)
        keys_dir = Path(settings.keys_dir)
        self.keys = server_keypair(keys_dir)
        memory.limit_arenas(settings.malloc_arena_max)  # before the Router starts libzmq's threads
        memory.map_large_blocks()
        self.trimmer = memory.Trimmer(settings.trim_interval, settings.trim_after)
        self.collector = memory.Collector(settings.gc_full_interval)
        #: What peers send wrong: logged at a bounded rate (a flood of garbage must not fill the disk).
        self.peer_log = PeerWarnings(log)
        self.sockets = Sockets(settings.listen, settings.user_listen, self.keys, self.keyring.allow_connection, settings.advertise, warn=self.peer_log.warning)
        self.admin_identity = first_admin(self.keyring, keys_dir, self.sockets.user_advertised, self.keys)
        send = self.sockets.send
        self.relay = Relay(send, SENDER, clock, before_forward=lambda node: self._push(only=node))
        self.waits = Waits(send, SENDER, clock)
        self.steps = Steps(self._answer)
        self.parked: deque[tuple[Envelope, api.Call, api.Handler]] = deque()  # changes held back (_park)
        self._specs = KeptPacked(KEPT_SPECS)  # slivers' specs as pushed, packed once each
        content = ContentStore(Path(settings.db).resolve().parent / "code", settings.code_max_bytes)
        self.pusher = CodePusher(content, send, SENDER, clock=clock)
        self.swarm = Swarm()
        self.user_waits = UserWaits()
        ctx = api.Context(self.cluster, settings, self.relay, clock, self.keyring, self.waits, content, self.pusher, self.swarm, self.user_waits)
        self.table = api.table(ctx)
        self.replays = api.replays(ctx)
        self.unknown_replies = RateLimit(settings.unknown_key_rate, max(1.0, settings.unknown_key_rate * 2))
        self.poller = Poller()
        self.poller.add(self.sockets.agents)
        if self.sockets.users is not None:
            self.poller.add(self.sockets.users)
        self.waker = Waker()
        self.poller.add(self.waker.fd)
        self.replies = Replies(self.store, settings.dedupe_entries)
        self.stats = Stats()
        self._after_push: set[str] = set()  # armed fault points to hit once the next push went out
        self._stopping = False
        now = clock()
        self._next_sweep = now + settings.heartbeat_period
        self._next_lease = now
        self._sweeps = 0
        self._behind_said = 0.0
        self._drained_at = now  # the last time the agents' socket was found empty (liveness is judged as of then)
        self._turn_started = 0.0  # when this turn began (perf_counter), and what its users had of it
        self._user_spent = 0.0
        log.info("controller listening on %s (agents) and %s (users) with %d nodes and %d slices from %s", self.url, self.user_url, len(registry), len(self.cluster.slices), settings.db)

    @property
    def url(self) -> str:
        """The agents' socket (users are answered there too, in turn with the agents)."""
        return self.sockets.url

    @property
    def user_url(self) -> str:
        """The users' socket, served first: the URL users' identity files name."""
        return self.sockets.user_url

    def stop(self) -> None:
        """Safe from a signal handler or another thread."""
        self._stopping = True
        self.waker.wake()

    def serve_forever(self) -> None:
        """Serve until ``stop``. A failing turn is logged and the next one runs: no request,
        record or full disk may stop the controller (what failed is retried next turn)."""
        try:
            while not self._stopping:
                try:
                    self.turn(0.1)
                except Exception:
                    self.stats.errors += 1
                    log.exception("a controller loop turn failed; serving on")
                    time.sleep(0.05)  # a persistent failure must not spin a core
        finally:
            self.close()

    def close(self) -> None:
        try:
            self.cluster.flush()  # states the last turns left for later (FLUSH_ROWS) are not lost
        except Exception:  # closing goes on: the sockets and the store must close all the same
            log.exception("writing the last sliver states at close failed")
        self.replies.flush()
        self.sockets.close()
        self.waker.close()
        self.store.close()

    def turn(self, timeout: float) -> None:
        if self.steps or self.cluster.dirty_nodes or self.cluster.unwritten or (self.parked and not self.cluster.changing):
            timeout = 0.0  # replies are being built, sets or states wait to go: look for messages, do not wait
        ready = self.poller.poll(min(timeout, max(0.0, self._next_sweep - self.clock())))
        if self.waker.fd in ready:
            self.waker.clear()
        started = self._turn_started = time.perf_counter()
        self.user_waits.watching(started)  # while in poll, a user's request would have woken it
        self._user_spent = 0.0
        self._serve_users()
        handled = 0
        while handled < MAX_BATCH:
            got = self.sockets.recv_agent()
            if got is None:
                self._drained_at = self.clock()
                break
            self._on_message(*got)
            handled += 1
            if handled % BATCH_CHECK == 0:
                self._serve_users()  # a user waits behind a few agent messages, not behind all
                if time.perf_counter() - started >= self.settings.batch_budget:
                    break  # what is left waits a turn: timers, pushes and big replies get theirs first
        if self.steps:
            # Big replies, a bounded slice per turn: as long as this turn's messages took, at
            # least ``step_budget``. Under a flood of heartbeats a 10,000-row listing still
            # gets half the loop, not 10 ms in every second and a half. Users are served
            # between steps (a view tolerates changes between its steps: steps.py).
            self.steps.run(max(self.settings.step_budget, time.perf_counter() - started), between=self._serve_users)
        self._settle()
        now = self.clock()
        if now >= self._next_sweep:
            self._next_sweep = now + self.cluster.registry.base_period / 2
            # Silence is judged as of the last time the agents' socket was empty, not as of
            # now: every heartbeat that had arrived by then has been read, so a node silent
            # before then was truly silent. A controller behind its backlog (seconds of
            # queued heartbeats at 10,000 nodes) would otherwise count as missed the very
            # heartbeats still waiting in its queue.
            self._say_if_behind(now)
            self._pace(now)
            for rec in self.cluster.sweep(min(now, self._drained_at)):
                self.relay.node_lost(rec.name)
                self.swarm.forget(rec.name)
            peers.push_due(self.cluster, now)
            self.relay.expire(now)
            self.pusher.expire(now)
            self.swarm.expire(now)
            self._sweeps += 1
            self._serve_users()
            if not self.cluster.changing:  # re-placing would take capacity a create in steps counts on
                healing.heal(self.cluster, now, self.settings.replace_after * self.cluster.registry.period(), part=self._sweeps % healing.FULL_PASS_EVERY)
            self._serve_users()
            self._settle()
            self.waits.expire(now, self.cluster.progress)
            self.trimmer.maybe_trim(self.stats.handled)
            self.collector.maybe_collect()
        if now >= self._next_lease:
            self._next_lease = now + self.settings.lease_check_period
            if self.cluster.expire_due(now):
                self.cluster.flush(FLUSH_ROWS)
                self._push()

    def _settle(self) -> None:
        """This turn's changes written, the desired sets they made pushed, the waits told;
        users are looked at between the phases: each is bounded, their sum is not (flush,
        push and waits after a 10,000-sliver change held pings for 100 ms and more)."""
        self.cluster.flush(FLUSH_ROWS)
        self.replies.flush()
        self._serve_users()
        self._push()
        self._serve_users()
        self.waits.changed(self.cluster.take_touched(), self.cluster.progress)

    def _say_if_behind(self, now: float) -> None:
        """A warning (one per ``BEHIND_SAY_EVERY`` s at most) while the agents' queue has not
        been empty for over a heartbeat period: nodes' silence is judged as of then, so a
        node that really died is found that much later."""
        behind = now - self._drained_at
        if behind > self.cluster.registry.period() and now >= self._behind_said + BEHIND_SAY_EVERY:
            self._behind_said = now
            log.warning("behind: the agents' queue has not been empty for %.1f s (%d messages handled so far); nodes are judged as of then", behind, self.stats.handled)

    def _pace(self, now: float) -> None:
        """Back-pressure on heartbeats: fewer while the agents' queue is not emptied."""
        reg = self.cluster.registry
        if reg.pace(now - self._drained_at, now):
            log.warning(
                "heartbeat period now %.1f s (%.2g times %.1f s): the agents' queue was last empty %.1f s ago", reg.period(), reg.stretch, reg.unstretched(), now - self._drained_at
            )

    def _serve_users(self) -> None:
        """The users' socket, first: what waits there, while users have had less than
        ``USER_SLICE`` of this turn, or ``USER_SHARE`` of it once it is busy.

        Priority in waiting, not in share. A user's request is looked for first and every 32
        agent messages, so it never waits behind the agents' backlog; but under a flood of
        user requests the agents keep three quarters of the loop. Serving every waiting user
        message at each look (64 pipelined creates) starved 1,000 agents' heartbeats until
        nodes were marked down (bench e2e); half the loop was still too little for them."""
        self.collector.young()  # what the last stretch made, now, not in some later step
        while True:
            now = time.perf_counter()
            self.user_waits.looked(now)
            others = now - self._turn_started - self._user_spent
            if self._user_spent >= max(USER_SLICE, others * USER_SHARE / (1 - USER_SHARE)):
                return
            if self.parked and not self.cluster.changing:
                self._serve(*self.parked.popleft(), unparked=True)  # held-back changes first, in order
            else:
                got = self.sockets.recv_user()
                if got is None:
                    return
                self._on_message(*got)
            self._user_spent += time.perf_counter() - now

    def _push(self, only: str | None = None) -> None:
        """Send changed nodes their desired sets (one per node, however many changes), oldest
        change first, for at most ``batch_budget`` and ``push_bytes_budget`` (the rest go next
        turn, after the users' socket had its look: a change to a 10,000-node slice is 10,000
        sets, and its whole address set 4.6 GB over all of them); or only node
        ``only``'s now: something relayed to a node must not overtake its set."""
        now = self.clock()
        peers.mark_readdressed(self.cluster)
        dirty = self.cluster.dirty_nodes
        if only is None:
            names = list(dirty)
        else:
            names = [only] if only in dirty else []
        opened = peers.open_slices(self.cluster) if names else set()
        started, sent = time.perf_counter(), 0
        for i, name in enumerate(names):
            if sent >= self.settings.push_bytes_budget and only is None:
                break  # whole address sets of a big slice: the rest next turn
            if i and i % PUSH_CHECK == 0 and only is None:
                if time.perf_counter() - started >= self.settings.batch_budget:
                    break
                handled = self.stats.handled
                self._serve_users()  # a user waits behind a few sets, not behind a whole push
                if self.stats.handled != handled:
                    opened = peers.open_slices(self.cluster)  # a request served may have opened a slice
            if name not in dirty:
                continue  # pushed meanwhile (a relayed message's own push), or its node went away
            dirty.pop(name)
            rec = self.cluster.registry.get(name)
            if rec is None or rec.peer is None or rec.state != "up":
                continue  # it gets the set when it heartbeats or registers again
            if only is None and self.cluster.hold(rec, now):
                continue  # its last set is on its way: this one follows once that is applied
            slivers = self.cluster.desired_for(rec)
            kept, changes, open_here = peers.changes_for(self.cluster, rec, opened)
            body, base, removed = slivers, -1, []
            if rec.sent is not None and rec.applied == rec.pushed:  # it holds the set last sent: the changes
                changed, gone = delta(rec.sent, slivers)
                if len(changed) <= DESIRED_PART:  # more goes whole, in parts
                    body, base, removed = changed, rec.pushed, gone
            if rec.deltas:
                rec.sent = {spec.id: spec for spec in slivers}
            parts = max(1, -(-len(body) // DESIRED_PART))
            for k in range(parts):
                chunk = body[k * DESIRED_PART : (k + 1) * DESIRED_PART]
                first = k == 0  # the peers ride on the first part only
                packed = Packed()
                for spec in chunk:
                    packed.append(self._specs(spec))
                msg = Desired(
                    generation=rec.generation, slivers=cast("list[SliverSpec]", packed), part=k, parts=parts, open_slices=open_here if first else [],
                    peer_sets=first, peer_slices=kept if first else [], peer_changes=peers.on_wire(self.cluster, changes) if first else [],
                    base=base, removed=removed,
                )
                payload = encode(msg, id=f"g{rec.generation}.{k}", sender=SENDER)
                self.sockets.send(rec.peer, payload)
                sent += len(payload)
            rec.last_push, rec.pushed = now, rec.generation
            self.stats.pushes += 1
            self.pusher.want(rec.name, rec.peer, slivers)  # pushed code follows its desired set
        if self._after_push and names:
            for point in sorted(self._after_push):
                faults.hit(point)

    def _reply(self, peer: bytes, msg_id: str, msg: Message) -> bytes:
        payload = encode(msg, id=msg_id, sender=SENDER)
        if len(payload) > self.settings.max_reply_bytes:  # bounded per reply, as the send queue is per peer
            log.warning("refusing to send a %d-byte reply to %s (max_reply_bytes %d)", len(payload), msg_id, self.settings.max_reply_bytes)
            cap = self.settings.max_reply_bytes
            payload = encode(Error("too-large", f"the reply would be {len(payload):,} bytes, over the controller's max_reply_bytes ({cap:,}): ask for less (a page, with a limit)"), id=msg_id, sender=SENDER)
        self.sockets.send(peer, payload)
        return payload

    def _on_message(self, peer: bytes, frames: list[bytes], address: str, key: str) -> None:
        who = f"{address or '?'} (key {key[:12] or '?'})"
        if len(frames) != 1:
            self.stats.dropped += 1
            self.peer_log.warning("dropping a %d-frame message from %s: expected 1 payload frame", len(frames), who)
            return
        try:
            env = decode(frames[0], max_bytes=self.settings.max_frame_bytes)
        except (VersionMismatch, BadBody) as exc:
            self.stats.dropped += 1
            self.peer_log.warning("refusing %s from %s: %s", exc.type_name, who, exc.reason)
            if not isinstance(exc, BadBody) or exc.is_request:
                self._reply(peer, exc.msg_id, Error(exc.code, exc.reason))
            return
        except ProtocolError as exc:
            self.stats.dropped += 1
            self.peer_log.warning("dropping a frame from %s: %s", who, exc.reason)
            return
        msg = env.msg
        principal = self.keyring.principal(key)
        call = api.Call(env.id, peer, address, key, principal)
        if principal is None:
            self._from_unknown(env, call, who)
            return
        if principal.kind == "agent" and on_users_socket(peer):
            self.stats.dropped += 1
            self.peer_log.warning("dropping %s from %s (%s): agents use the agents' socket, not the users'", env.type, principal.who, who)
            return
        if isinstance(msg, (Ok, Error)):
            if principal.kind != "agent" or not self.relay.on_reply(env, peer, principal.name):
                self.stats.dropped += 1
                self.peer_log.warning("dropping an unexpected %s from %s", env.type, who)
            return
        handler = self.table.get(type(msg))
        refusal = access.sender_refusal(type(msg), principal)
        if handler is None or refusal is not None:
            self.stats.dropped += 1
            self.peer_log.warning("refusing %s from %s (%s): %s", env.type, principal.who, who, refusal or "not something the controller handles")
            if msg.REQUEST:
                self._reply(peer, env.id, Error("forbidden", refusal or f"the controller does not handle {env.type}"))
            return
        if not msg.REQUEST:
            try:
                handler(msg, call)
            except (SliceMeshError, ProtocolError) as exc:
                self.peer_log.warning("ignoring %s from %s: %s", env.type, principal.who, exc)
                if isinstance(exc, SliceMeshError) and exc.answers_notices:
                    self._reply(peer, env.id, error_of(exc))
            except Exception:
                log.exception("handling %s from %s failed", env.type, principal.who)
            return
        self._serve(env, call, handler)

    def _from_unknown(self, env: Envelope, call: api.Call, who: str) -> None:
        """A key the controller has not accepted: it may only ask to enrol (``register``),
        and gets answers at a bounded rate; past that it gets none (flood protection)."""
        if not env.msg.REQUEST or not self.unknown_replies.take():
            self.stats.dropped += 1
            return
        if isinstance(env.msg, Register) and not on_users_socket(call.peer):  # enrolment is for agents
            self._serve(env, call, self.table[Register])
            return
        self.stats.dropped += 1
        self.peer_log.warning("refusing %s from %s: the key is not accepted", env.type, who)
        self._reply(call.peer, env.id, Error("unknown-key", "this key is not known to the controller (or not yet accepted): ask an operator, or run `slicemesh login` with your key"))

    def _serve(self, env: Envelope, call: api.Call, handler: api.Handler, *, unparked: bool = False) -> None:
        msg, peer = env.msg, call.peer
        key = (call.key, env.id)
        mutating = type(msg) in MUTATING
        if self.steps.retried(call.key, env.id, peer):
            return  # a retry of a reply still being built: answered with it when it is done
        if mutating:
            known = self.replies.known(key)
            if isinstance(known, bytes):
                self.sockets.send(peer, known)  # a retry: same answer, not applied twice
                return
            if not unparked and (self.cluster.changing or self.parked):
                self._park(env, call, handler)
                return
            if isinstance(known, Applied) and type(msg) in self.replays:
                replay, summary = self.replays[type(msg)], known.summary  # applied, then the controller died: answer from what it did
                handler = lambda m, c: replay(m, c, summary)  # noqa: E731
        self.stats.handled += 1
        self.store.applying = key if mutating else None
        try:
            result = handler(msg, call)  # a change is applied here, or (a create) begun here and ended in steps, as big replies are built
        except Exception as exc:
            self._answer(Job(peer, env.id, call.key, env.type, call.who, mutating), None, exc)
            return
        finally:
            self.store.applying = None
        if isinstance(result, Deferred):
            return  # the relay answers when the node does (or at the deadline)
        job = Job(peer, env.id, call.key, env.type, call.who, mutating, result if isinstance(result, GeneratorType) else None)
        if job.steps is not None:
            if mutating:  # a change in steps (a create): its first step now, the store marked in each
                job.steps = self._applying(key, job.steps)
            self.steps.start(job, first_now=mutating)  # built over the next turns (steps.py), answered by _answer
            return
        self._answer(job, result, None)

    def _applying(self, key: tuple[str, str], steps: Stepped) -> Stepped:
        """``steps``, with the store told at each step which request is applying (a create
        writes in its last step: a retry after a crash then finds it applied)."""
        while True:
            self.store.applying = key
            try:
                next(steps)
            except StopIteration as done:
                return done.value
            finally:
                self.store.applying = None
            yield

    def _park(self, env: Envelope, call: api.Call, handler: api.Handler) -> None:
        """Hold a change back while another is under way in steps (``Cluster.changing``: a
        create being placed and written, a big delete's rows being removed): served in arrival
        order once that is done; past ``MAX_PARKED`` refused as busy."""
        if len(self.parked) >= MAX_PARKED:
            self.stats.dropped += 1
            self._reply(call.peer, env.id, Error("busy", f"{len(self.parked):,} changes already wait behind a large slice being created or deleted: try again in a moment"))
            return
        self.parked.append((env, call, handler))

    def _answer(self, job: Job, result: Any, error: BaseException | None) -> None:
        """The one reply to a request, from its handler's result or failure."""
        reply: Message
        if error is None and isinstance(result, REPLIES.get(job.type_name, object)):
            reply = Ok(packable(result))
        elif isinstance(error, SliceMeshError):
            self.stats.errors += 1
            reply = error_of(error)
        else:
            self.stats.errors += 1
            if error is None:
                error = TypeError(f"handler for {job.type_name} returned {type(result).__name__}, not {REPLIES.get(job.type_name)}")
            log.error("handling %s %s from %s failed", job.type_name, job.msg_id, job.who, exc_info=error)
            reply = Error("internal", f"the controller failed to handle {job.type_name}: {type(error).__name__}: {error}")
        payload = self._reply(job.peer, job.msg_id, reply)
        for peer in job.retries:
            self.sockets.send(peer, payload)  # the same answer to each retry, as a stored reply would be
        if job.mutating and not (isinstance(reply, Error) and reply.code in ("unavailable", "busy")):  # not applied: a retry may succeed
            self.replies.save((job.key, job.msg_id), payload, applied=isinstance(reply, Ok))
        verb = FAULT_VERBS_BY_NAME.get(job.type_name)
        if faults.ARMED and isinstance(reply, Ok) and verb is not None:
            faults.hit(f"{verb}.after_reply")
            self._after_push.add(f"{verb}.after_push")


def error_of(exc: SliceMeshError) -> Error:
    """The ``error`` reply a domain error becomes."""
    return Error(exc.code, exc.reason, exc.details)
