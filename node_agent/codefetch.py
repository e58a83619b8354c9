"""Pulling slices' code to this node (receiver-initiated): a bundle a desired sliver needs and
the cache lacks is fetched in chunks over the agent's own connection to the controller, one
chunk in flight per bundle, resumed from what arrived; or, when the controller says so, from a
peer agent that holds it (below); verified and unpacked off the loop (codecache.py); then the
slivers that wait for it are created (docs/code.md).

From a peer: a fetch that starts a bundle offers a port this node listens on and a one-time
token (``FetchCode.port``/``token``). The controller either answers with chunks itself, tells
this node to wait (enough nodes fetch from it already and will hold the bundle soon), or
names a peer that holds it (``CodeChunk.peer``) and tells that peer to send it here
(``SendCode``): one stream over TCP (diskmove.py), which must start with the token and end
with the SHA-256 of what it carried, and then the bundle must still hash to its name. A
peer that does not connect within ``PEER_CONNECT`` seconds, or whose stream is bad, is given
up on: this node then fetches from the controller (offering no port, which also tells the
controller that peer failed). The receive runs on a thread of its own and hands back to the
loop through ``post``. This node, once it holds a bundle, says so (``CodeAck(held=True)``),
sends it to peers when told (``on_send``), and says when it no longer holds it (evicted).

Runs on the agent's loop thread; ``send`` queues a request, replies come back to
``on_chunk``/``on_error``; ``tick`` asks again for a chunk whose reply was lost.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from node_agent import diskmove
from node_agent.codecache import CodeCache
from slices.model import SliverSpec, SliverStatus
from slices.protocol import CodeAck, CodeChunk, Error, FetchCode, Message, PushCode, SendCode

log = logging.getLogger(__name__)

RETRIES = 3  # whole-bundle fetches after a digest mismatch
ASK_AGAIN = 10.0  # seconds without a reply before a chunk is asked for again
PEER_CONNECT = 10.0  # seconds a peer named by the controller has to connect
PEER_RATE = 4 << 20  # bytes/s a peer's stream must at least keep up, on top of PEER_CONNECT
MAX_SENDS = 8  # bundles this node sends to peers at once (the controller asks for at most 4)


@dataclasses.dataclass
class Fetch:
    size: int
    started: float
    asked: float
    attempts: int = 1
    finishing: bool = False
    received: int = 0  # bytes that came over the wire
    waiters: set[str] = dataclasses.field(default_factory=set)  # the slivers it is fetched for
    pushed: bool = False  # the controller sends it unasked (delivery: push); this node acks
    rx: diskmove.Receiver | None = None  # where a peer may send it (offered while none has come)
    peer: str = ""  # the peer sending it, once the controller named one
    direct: bool = False  # from the controller only (a peer failed, or this node cannot listen)
    next_ask: float = 0.0  # told to wait: ask again then


class CodeFetcher:
    def __init__(
        self,
        node: str,
        cache: CodeCache,
        send: Callable[[Message], None],
        submit: Callable[[Callable[[], Any], Callable[[Any, BaseException | None], None]], None],
        ready: Callable[[], None],
        clock: Callable[[], float],
        post: Callable[[Callable[[], None]], None],
        *,
        peers: bool = True,
    ) -> None:
        self.node, self.cache, self.send, self.submit, self.ready, self.clock = node, cache, send, submit, ready, clock
        self.post = post  # from any thread: run a callback on the loop thread
        self.peers = peers  # offer a port: a peer may send bundles here
        self.active: dict[str, Fetch] = {}
        self.notes: dict[str, str] = {}  # sliver -> how its code reached this node, for ``show``
        self.sends = 0  # bundles being sent to peers now
        self.closed = False  # the agent stopped: late callbacks from threads change nothing

    def want(self, desired: Mapping[str, SliverSpec]) -> None:
        """Start fetching every bundle a desired sliver needs that this node lacks."""
        for sid in [s for s in self.notes if s not in desired]:
            del self.notes[sid]
        for spec in desired.values():
            code = spec.code
            if code is None or spec.id in self.notes:
                continue
            if code.digest in self.active:
                self.active[code.digest].waiters.add(spec.id)
                continue
            if self.cache.tree(code.digest) is not None:
                self.notes[spec.id] = "cached on this node"
                self.cache.used(code.digest)
                continue
            now = self.clock()
            pushed = code.delivery == "push"
            self.active[code.digest] = Fetch(code.size, now, now, waiters={spec.id}, pushed=pushed)
            if pushed:  # it comes unasked (``tick`` nudges the controller if it stops coming)
                continue
            log.info("%s: fetching code bundle %s (%d bytes)", self.node, code.digest[:12], code.size)
            self._ask(code.digest)

    def ready_for(self, spec: SliverSpec) -> bool:
        return spec.code is None or self.cache.tree(spec.code.digest) is not None

    def waiting(self, spec: SliverSpec) -> SliverStatus:
        """The status of a sliver not created yet because its code is on its way."""
        return SliverStatus(spec.id, "pending", self.note(spec) or "waiting for its code")

    def annotate(self, statuses: dict[str, SliverStatus], desired: Mapping[str, SliverSpec]) -> dict[str, SliverStatus]:
        """Each status of a sliver with code, with how its code reached this node."""
        for sid, st in statuses.items():
            note = self.note(desired[sid]) if sid in desired else None
            if note is not None:
                statuses[sid] = dataclasses.replace(st, code=note)
        return statuses

    def _ask(self, digest: str) -> None:
        f = self.active[digest]
        f.asked = self.clock()
        f.next_ask = 0.0
        have = self.cache.have(digest)
        if have == 0 and self.peers and not f.direct and f.rx is None:
            try:
                f.rx = diskmove.Receiver(secrets.token_hex(16), what="code bundle", durable=False)
            except OSError as exc:
                log.warning("%s: cannot listen for code bundle %s from a peer (%s): fetching it from the controller", self.node, digest[:12], exc)
                f.direct = True
        offer = f.rx if have == 0 and not f.direct else None
        self.send(FetchCode(node=self.node, digest=digest, offset=have, port=offer.port if offer else 0, token=offer.token if offer else ""))

    def _stop_listening(self, f: Fetch) -> None:
        if f.rx is not None:
            f.rx.close()
            f.rx = None

    def _ack(self, digest: str, have: int | None = None) -> None:
        f = self.active.get(digest)
        if f is not None:
            f.asked = self.clock()
        self.send(CodeAck(node=self.node, digest=digest, have=self.cache.have(digest) if have is None else have))

    def on_push(self, chunk: PushCode) -> None:
        """A chunk the controller sent unasked: kept if a sliver here needs it, acknowledged."""
        f = self.active.get(chunk.digest)
        if f is None:
            if self.cache.tree(chunk.digest) is not None:
                self._ack(chunk.digest, chunk.size)  # had it already: the controller stops
            return
        self.on_chunk(CodeChunk(digest=chunk.digest, offset=chunk.offset, size=chunk.size, data=chunk.data))

    def on_chunk(self, chunk: CodeChunk) -> None:
        f = self.active.get(chunk.digest)
        if f is None or f.finishing or f.peer:
            return
        if chunk.peer and not chunk.data:
            if f.rx is not None:
                self._from_peer(chunk.digest, f, chunk.peer)
            return  # else a late answer to an offer taken back: asked again by ``tick``
        if not chunk.data and chunk.offset < chunk.size:
            f.next_ask = self.clock() + max(0.05, chunk.wait) * random.uniform(0.8, 1.2)  # others fetch it now: soon a peer will hold it
            return
        self._stop_listening(f)  # the controller sends it itself
        f.received += len(chunk.data)
        have = self.cache.write(chunk.digest, chunk.offset, chunk.data)
        if f.pushed:
            self._ack(chunk.digest, have)
        if have < chunk.size and chunk.data:
            if not f.pushed:
                self._ask(chunk.digest)
            return
        self._finish(chunk.digest, f)

    def _finish(self, digest: str, f: Fetch) -> None:
        """The whole bundle is here, by whatever path: verify and unpack it on the worker."""
        f.finishing = True
        self.submit(lambda: self.cache.finish(digest), lambda why, exc: self._finished(digest, why if exc is None else str(exc)))

    def _from_peer(self, digest: str, f: Fetch, peer: str) -> None:
        """The controller named ``peer`` to send the bundle: wait for its stream, off the loop."""
        rx = f.rx
        assert rx is not None
        f.peer = peer
        dest = self.cache.partial / digest
        connect_by = time.monotonic() + PEER_CONNECT
        deadline = connect_by + f.size / PEER_RATE

        def run() -> None:
            why: str | None = None
            try:
                rx.receive(dest, deadline, connect_by=connect_by)
            except (diskmove.TransferError, OSError) as exc:
                why = str(exc)
            finally:
                rx.close()
            self.post(lambda: self._from_peer_done(digest, rx, why))

        threading.Thread(target=run, name=f"code-from-{peer}", daemon=True).start()

    def _from_peer_done(self, digest: str, rx: diskmove.Receiver, why: str | None) -> None:
        f = self.active.get(digest)
        if f is None or f.rx is not rx or self.closed:
            return
        f.rx = None
        f.received += rx.received
        if why is None:  # verified and unpacked as any bundle is (``_finished`` on failure: from the controller)
            self._finish(digest, f)
            return
        log.warning("%s: code bundle %s from peer %s failed: %s; fetching it from the controller", self.node, digest[:12], f.peer, why)
        self._off_peer(f)
        f.attempts += 1
        self._ask(digest)

    @staticmethod
    def _off_peer(f: Fetch) -> None:
        """Its peer failed it: from the controller from now on (asked without a port, the
        controller stops counting on that peer)."""
        f.peer = ""
        f.direct = True

    def _finished(self, digest: str, why: str | None) -> None:
        f = self.active.get(digest)
        if f is None:
            return
        if why is None:
            del self.active[digest]
            self._stop_listening(f)
            took = self.clock() - f.started
            source = f"pulled from peer {f.peer}" if f.peer else "pushed by the controller" if f.pushed else "pulled from the controller"
            how = f"{source} in {took:.2f} s ({f.received} bytes" + (f", {f.attempts} attempts)" if f.attempts > 1 else ")")
            self.notes.update(dict.fromkeys(f.waiters, how))
            log.info("%s: code bundle %s arrived: %s", self.node, digest[:12], how)
            if self.peers:
                self.send(CodeAck(node=self.node, digest=digest, have=f.size, held=True))  # peers may fetch it from here now
            self.ready()
            return
        log.warning("%s: code bundle %s thrown away: %s", self.node, digest[:12], why + (f" (from peer {f.peer})" if f.peer else ""))
        if f.peer:
            self._off_peer(f)
        if f.attempts > RETRIES:
            del self.active[digest]
            self._stop_listening(f)
            self.notes.update(dict.fromkeys(f.waiters, f"not fetched: {why} ({f.attempts} attempts)"))
            self.ready()
            return
        f.attempts += 1
        f.finishing = False
        if f.pushed:
            self._ack(digest, 0)  # from the start again
        else:
            self._ask(digest)

    def on_error(self, request: FetchCode, err: Error) -> None:
        log.warning("%s: fetching code bundle %s refused: %s: %s", self.node, request.digest[:12], err.code, err.reason)
        # asked again by ``tick``: a bundle can be refused while the desired set that needs it is on its way

    def tick(self, now: float) -> None:
        for digest, f in self.active.items():
            if f.next_ask and now >= f.next_ask:
                self._ask(digest)
                continue
            if f.finishing or f.peer or now - f.asked <= ASK_AGAIN:
                continue
            if f.pushed:
                self._ack(digest)  # nothing came for a while: the controller sends on from here
            else:
                self._ask(digest)

    def due(self) -> float | None:
        """When ``tick`` must next run for a fetch told to wait (None: none waits)."""
        waits = [f.next_ask for f in self.active.values() if f.next_ask]
        return min(waits) if waits else None

    # ---- this node as a peer: it sends what it holds -----------------------------------------

    def announce(self) -> None:
        """After registering: the controller hears again which bundles this node holds."""
        for digest in self.cache.held() if self.peers else []:
            self.send(CodeAck(node=self.node, digest=digest, have=0, held=True))

    def evicted(self, digests: list[str]) -> None:
        for digest in digests:
            self.send(CodeAck(node=self.node, digest=digest, have=0, held=False))

    def on_send(self, msg: SendCode) -> None:
        """The controller asks this node to send a bundle it holds to node ``msg.to``."""
        path = self.cache.bundle(msg.digest) if self.peers else None
        if path is None:
            log.warning("%s: asked to send code bundle %s to %s, which this node no longer holds", self.node, msg.digest[:12], msg.to)
            self.send(CodeAck(node=self.node, digest=msg.digest, have=0, held=False))
            return  # the peer gives up waiting and fetches from the controller
        if self.sends >= MAX_SENDS:
            log.warning("%s: not sending code bundle %s to %s: %d sends under way already", self.node, msg.digest[:12], msg.to, self.sends)
            return
        self.sends += 1
        timeout = PEER_CONNECT + msg.size / PEER_RATE

        def run() -> None:
            try:
                sent = diskmove.send_file(msg.endpoint, msg.token, path, {"digest": msg.digest}, timeout, what="code bundle")
                outcome = f"sent code bundle {msg.digest[:12]} to {msg.to} in {sent.seconds:.2f} s ({sent.bytes} bytes)"
            except (diskmove.TransferError, OSError) as exc:
                outcome = f"could not send code bundle {msg.digest[:12]} to {msg.to}: {exc}"
            self.post(lambda: self._sent(outcome))

        threading.Thread(target=run, name=f"code-to-{msg.to}", daemon=True).start()

    def _sent(self, outcome: str) -> None:
        self.sends -= 1
        log.info("%s: %s", self.node, outcome)

    def close(self) -> None:
        self.closed = True
        for f in self.active.values():
            self._stop_listening(f)

    def note(self, spec: SliverSpec) -> str | None:
        if spec.code is None:
            return None
        if spec.id in self.notes:
            return self.notes[spec.id]
        f = self.active.get(spec.code.digest)
        return f"fetching its code: {self.cache.have(spec.code.digest)} of {f.size} bytes" if f else None
