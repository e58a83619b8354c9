"""Pulling slices' code to this node (receiver-initiated): a bundle a desired sliver needs and
the cache lacks is fetched from the controller in chunks over the agent's own connection, one
chunk in flight per bundle, resumed from what arrived; verified and unpacked off the loop
(codecache.py); then the slivers that wait for it are created (docs/code.md).

Runs on the agent's loop thread; ``send`` queues a request, replies come back to
``on_chunk``/``on_error``; ``tick`` asks again for a chunk whose reply was lost.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from typing import Any

from node_agent.codecache import CodeCache
from slices.model import SliverSpec, SliverStatus
from slices.protocol import CodeAck, CodeChunk, Error, FetchCode, Message, PushCode

log = logging.getLogger(__name__)

RETRIES = 3  # whole-bundle fetches after a digest mismatch
ASK_AGAIN = 10.0  # seconds without a reply before a chunk is asked for again


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


class CodeFetcher:
    def __init__(
        self,
        node: str,
        cache: CodeCache,
        send: Callable[[Message], None],
        submit: Callable[[Callable[[], Any], Callable[[Any, BaseException | None], None]], None],
        ready: Callable[[], None],
        clock: Callable[[], float],
    ) -> None:
        self.node, self.cache, self.send, self.submit, self.ready, self.clock = node, cache, send, submit, ready, clock
        self.active: dict[str, Fetch] = {}
        self.notes: dict[str, str] = {}  # sliver -> how its code reached this node, for ``show``

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
            log.info("%s: fetching code bundle %s (%d bytes) from the controller", self.node, code.digest[:12], code.size)
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
        self.send(FetchCode(node=self.node, digest=digest, offset=self.cache.have(digest)))

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
        if f is None or f.finishing:
            return
        f.received += len(chunk.data)
        have = self.cache.write(chunk.digest, chunk.offset, chunk.data)
        if f.pushed:
            self._ack(chunk.digest, have)
        if have < chunk.size and chunk.data:
            if not f.pushed:
                self._ask(chunk.digest)
            return
        f.finishing = True
        digest = chunk.digest
        self.submit(lambda: self.cache.finish(digest), lambda why, exc: self._finished(digest, why if exc is None else str(exc)))

    def _finished(self, digest: str, why: str | None) -> None:
        f = self.active.get(digest)
        if f is None:
            return
        if why is None:
            del self.active[digest]
            took = self.clock() - f.started
            verb = "pushed by" if f.pushed else "pulled from"
            how = f"{verb} the controller in {took:.2f} s ({f.received} bytes" + (f", {f.attempts} attempts)" if f.attempts > 1 else ")")
            self.notes.update(dict.fromkeys(f.waiters, how))
            log.info("%s: code bundle %s arrived: %s", self.node, digest[:12], how)
            self.ready()
            return
        log.warning("%s: code bundle %s thrown away: %s", self.node, digest[:12], why)
        if f.attempts > RETRIES:
            del self.active[digest]
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
            if f.finishing or now - f.asked <= ASK_AGAIN:
                continue
            if f.pushed:
                self._ack(digest)  # nothing came for a while: the controller sends on from here
            else:
                self._ask(digest)

    def note(self, spec: SliverSpec) -> str | None:
        if spec.code is None:
            return None
        if spec.id in self.notes:
            return self.notes[spec.id]
        f = self.active.get(spec.code.digest)
        return f"fetching its code: {self.cache.have(spec.code.digest)} of {f.size} bytes" if f else None
