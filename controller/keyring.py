"""Every key the controller knows, what it belongs to, and the rules for unknown ones.

Two readers: the ZAP gate, on pyzmq's authenticator thread, decides whether a key may finish
the CURVE handshake at all (revoked and rejected keys may not; unknown keys may, at a bounded
rate, so a new agent can ask to enrol); the loop maps each message's authenticated key to
its principal. The gate reads an immutable snapshot that the loop replaces whole after each
change (an atomic assignment), so no lock is held across threads for a lookup, and a revoked
key is refused from the moment the change commits.

Enrolment, as Salt does it: a new agent's key waits as ``pending`` (bounded in number) until an
operator accepts it, unless it was pre-seeded or presents a one-time token.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import replace

from controller.truststore import Principal, TrustStore
from slices.errors import SliceMeshError
from slices.ratelimit import RateLimit

log = logging.getLogger(__name__)


class Refused(SliceMeshError):
    code = "forbidden"


class Pending(SliceMeshError):
    code = "pending"


class Conflict(SliceMeshError):
    code = "conflict"


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class KeyRing:
    def __init__(
        self, trust: TrustStore, *, max_pending: int, unknown_rate: float, clock: Callable[[], float] = time.time, on_agents: Callable[[int], None] | None = None
    ) -> None:
        """``on_agents``: told how many agent keys are accepted, at start and at each change."""
        self.trust = trust
        self.on_agents = on_agents
        self.clock = clock
        self.max_pending = max_pending
        self.by_key: dict[str, Principal] = {p.key: p for p in trust.principals()}
        self.unknown = RateLimit(unknown_rate, max(1.0, unknown_rate * 2))
        self._gate: dict[str, str] = {}
        self._publish()

    # ---- readers ---------------------------------------------------------------------------

    def allow_connection(self, key: str) -> bool:
        """On the authenticator thread: may this key complete a handshake?"""
        state = self._gate.get(key)
        if state == "accepted":
            return True
        if state in ("revoked", "rejected"):
            return False
        return self.unknown.take()  # unknown or pending: they may ask, at a bounded rate

    def principal(self, key: str) -> Principal | None:
        """The accepted principal of a key, or None."""
        p = self.by_key.get(key)
        return p if p is not None and p.state == "accepted" else None

    def named(self, kind: str, name: str, state: str | None = "accepted") -> Principal | None:
        for p in self.by_key.values():
            if p.kind == kind and p.name == name and (state is None or p.state == state):
                return p
        return None

    def __iter__(self) -> Iterator[Principal]:
        return iter(list(self.by_key.values()))

    def has_admin(self) -> bool:
        return any(p.kind == "user" and p.role == "admin" and p.state == "accepted" for p in self.by_key.values())

    # ---- changes (the loop's thread) ---------------------------------------------------------

    def _publish(self) -> None:
        self._gate = {k: p.state for k, p in self.by_key.items()}
        if self.on_agents is not None:
            self.on_agents(sum(1 for p in self.by_key.values() if p.kind == "agent" and p.state == "accepted"))

    def put(self, *principals: Principal) -> None:
        """Write principals (one transaction), then make them visible to readers."""
        with self.trust.store.transaction():
            self.trust.put_principals(principals)
        for p in principals:
            self.by_key[p.key] = p
        self._publish()

    def remove(self, key: str) -> None:
        with self.trust.store.transaction():
            self.trust.delete_principal(key)
        self.by_key.pop(key, None)
        self._publish()

    def trust_agents(self, agents: dict[str, str], address: str = "") -> int:
        """Pre-seed agent keys (node -> key); a node's earlier key, if any, is replaced."""
        now = self.clock()
        for node, key in agents.items():
            other = self.by_key.get(key)
            if other is not None and (other.kind, other.name) != ("agent", node) and other.state == "accepted":
                raise Conflict(f"that key already belongs to {other.who}")
        made = []
        for node, key in agents.items():
            old = self.named("agent", node)
            if old is not None and old.key != key:
                made.append(replace(old, state="revoked", updated=now))
            made.append(Principal(key, "agent", node, "accepted", address=address, created=now, updated=now))
        self.put(*made)
        return len(agents)

    def set_state(self, kind: str, name: str, state: str, *, source: str) -> Principal:
        """Accept or reject a pending key, or revoke an accepted one."""
        want_from = {"accepted": ("pending",), "rejected": ("pending",), "revoked": ("accepted", "pending")}[state]
        found = [p for p in self.by_key.values() if p.kind == kind and p.name == name and p.state in want_from]
        if not found:
            raise SliceMeshError(f"no {' or '.join(want_from)} key for {kind} {name!r}", code="not-found")
        if state == "accepted":
            if len(found) > 1:
                raise Conflict(f"{len(found)} different keys wait for {kind} {name!r}; reject all but one first (slicemesh keys list)")
            current = self.named(kind, name)
            if current is not None:
                raise Conflict(f"{kind} {name!r} already has an accepted key; revoke it first if the machine was reinstalled")
        now = self.clock()
        changed = [replace(p, state=state, updated=now) for p in found]
        self.put(*changed)
        log.info("%s %s: key %s %s by %s", kind, name, ", ".join(p.fingerprint for p in changed), state, source)
        return changed[0]

    def revoke_agent(self, node: str, source: str) -> None:
        """A removed node's key may not bring the node back."""
        current = self.named("agent", node)
        if current is not None:
            self.set_state("agent", node, "revoked", source=source)

    def note_pending(self, key: str, node: str, address: str) -> None:
        """Remember an unknown agent key asking to enrol as ``node`` (bounded in number)."""
        now = self.clock()
        old = self.by_key.get(key)
        if old is not None:
            if old.state == "pending" and (old.name != node or now - old.updated > 60):
                self.put(replace(old, name=node, address=address, updated=now))  # refresh, at most once a minute
            return
        pending = sum(1 for p in self.by_key.values() if p.state == "pending")
        if pending >= self.max_pending:
            raise Refused(f"the controller already holds {pending} pending keys (max_pending_keys); ask an operator to accept or reject some")
        self.put(Principal(key, "agent", node, "pending", address=address, created=now, updated=now))
        log.warning("node %s asks to enrol with key %s from %s: accept it with `slicemesh keys accept %s`", node, key[:12], address or "?", node)

    # ---- tokens ------------------------------------------------------------------------------

    def make_token(self, node: str | None, ttl: float) -> tuple[str, float]:
        token = secrets.token_urlsafe(24)
        now = self.clock()
        with self.trust.store.transaction():
            self.trust.drop_expired_tokens(now)
            self.trust.add_token(token_digest(token), node, now + ttl, now)
        return token, now + ttl

    def enrol_with_token(self, token: str, node: str, key: str, address: str) -> Principal | None:
        """Accept ``key`` for ``node`` if ``token`` is valid for it; the token is used up in the
        same transaction. None (and nothing changed) for a wrong, used or expired token."""
        digest = token_digest(token)
        found = self.trust.token(digest)
        now = self.clock()
        if found is None or found[1] < now or (found[0] is not None and found[0] != node):
            return None
        if self.named("agent", node) is not None:
            raise Conflict(f"node {node!r} already has an accepted key; an operator must revoke it before a token can replace it")
        p = Principal(key, "agent", node, "accepted", address=address, created=now, updated=now)
        with self.trust.store.transaction():
            self.trust.drop_token(digest)
            self.trust.put_principal(p)
        self.by_key[key] = p
        self._publish()
        log.info("node %s enrolled with a one-time token (key %s, from %s)", node, p.fingerprint, address or "?")
        return p
