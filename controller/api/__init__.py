"""The controller's request handlers, one module per topic, merged into one dispatch table.

A handler takes the typed message and the ``Call`` it came in (request id, routing peer,
address) and returns the request's reply record, ``DEFERRED`` when the reply comes later
(relayed to an agent, or a wait), or nothing for a notice; it raises ``SliceMeshError`` for a
refusal. The server turns each outcome into exactly one reply.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from controller.cluster import Cluster
from controller.codepush import CodePusher
from controller.codeswarm import Swarm
from controller.contentstore import ContentStore
from controller.keyring import KeyRing
from controller.relay import Relay
from controller.settings import ControllerSettings
from controller.truststore import Principal
from controller.userwaits import UserWaits
from controller.waits import Waits
from slices.errors import SliceMeshError
from slices.protocol import Message


@dataclass(frozen=True)
class Call:
    """Who sent a message and from where, as the transport (never the message) says."""

    id: str  # the request id, echoed in the reply
    peer: bytes  # ROUTER routing id of the connection
    address: str  # the peer's IP address, for logs
    key: str  # the CURVE public key the connection authenticated with
    principal: Principal | None  # who that key belongs to, once accepted

    @property
    def who(self) -> str:
        return self.principal.who if self.principal is not None else f"unknown key {self.key[:12]}"

    def user(self) -> Principal:
        """The calling user (handlers of user requests only ever see users)."""
        if self.principal is None or self.principal.kind != "user":
            raise SliceMeshError("only users may do this", code="forbidden")
        return self.principal


Handler = Callable[[Any, Call], Any]
#: The answer to a request that was applied, but whose reply a crash prevented: from the
#: summary its change stored (``controller/replies.py``), without applying it again.
Replay = Callable[[Any, Call, dict[str, Any]], Any]


@dataclass
class Context:
    """What every topic's handlers share."""

    cluster: Cluster
    settings: ControllerSettings
    relay: Relay
    clock: Callable[[], float]
    keyring: KeyRing
    waits: Waits
    content: ContentStore  # slices' code bundles (contentstore.py)
    pusher: CodePusher  # ``delivery: push`` (codepush.py)
    swarm: Swarm  # where a pulled bundle comes from: the controller or a peer (codeswarm.py)
    user_waits: UserWaits  # how long the users' socket went unread (userwaits.py): `ping` reports it

    def record(self, call: Call, action: str, target: str, detail: str = "", *, who: str | None = None) -> None:
        """One audit entry in its own transaction (after the change it records committed)."""
        with self.keyring.trust.store.transaction():
            self.note(call, action, target, detail, who=who)()

    def note(self, call: Call, action: str, target: str, detail: str = "", *, who: str | None = None) -> Callable[[], None]:
        """An audit entry to write inside the transaction of the change it records."""
        return lambda: self.keyring.trust.audit(self.clock(), who or call.who, call.key[:12], action, target, detail)


def table(ctx: Context) -> dict[type[Message], Handler]:
    from controller.api import agents, audit, code, keys, moves, nodes, orphans, relayed, slices, users

    out: dict[type[Message], Handler] = {}
    for topic in (agents, slices, nodes, relayed, keys, users, audit, orphans, moves, code):
        for cls, handler in topic.handlers(ctx).items():
            if cls in out:
                raise ValueError(f"two handlers for {cls.TYPE}")
            out[cls] = handler
    return out


def replays(ctx: Context) -> dict[type[Message], Replay]:
    """Requests answered from what they did when retried after a crash (the rest, run again,
    refuse or find their work done)."""
    from controller.api import moves, slices

    return {**slices.replays(ctx), **moves.replays(ctx)}
