"""Requests the controller passes on to a node agent: ``exec`` and ``logs`` of a sliver.

The client's request is answered later, when the agent answers the relayed one; output
chunks (``exec_output``) are forwarded as they come, and so is the user's input to a running
``exec -i``/``-t`` (``exec_input``, ``exec_resize``) the other way. A relay the agent never
answers gets an error reply at its deadline, so the client still gets exactly one reply.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

from slices.codec import Envelope, encode, new_id
from slices.errors import ProtocolError
from slices.protocol import Error, ExecInput, ExecOutput, ExecResize, Message, NodeExec, Ok, result_of

log = logging.getLogger(__name__)

Send = Callable[[bytes, bytes], bool]


class Deferred:
    """Returned by a handler whose reply comes later (through the relay)."""


DEFERRED = Deferred()


@dataclass
class Pending:
    client: bytes
    client_id: str
    node: str
    node_peer: bytes
    request: Message
    deadline: float


class Relay:
    def __init__(self, send: Send, sender: str, clock: Callable[[], float], before_forward: Callable[[str], None] | None = None) -> None:
        self.send = send
        self.sender = sender
        self.clock = clock
        self.before_forward = before_forward  # e.g. send the node its pending desired set first
        self.pending: dict[str, Pending] = {}
        self.by_client: dict[tuple[bytes, str], str] = {}  # (client peer, its request id) -> relay id

    def forward(self, client: bytes, client_id: str, node: str, node_peer: bytes, msg: Message, timeout: float) -> None:
        if self.before_forward is not None:
            self.before_forward(node)
        relay_id = new_id()
        self.pending[relay_id] = Pending(client, client_id, node, node_peer, msg, self.clock() + timeout)
        self.by_client[(client, client_id)] = relay_id
        self.send(node_peer, encode(msg, id=relay_id, sender=self.sender))

    def _to_client(self, p: Pending, msg: Message) -> None:
        self.send(p.client, encode(msg, id=p.client_id, sender=self.sender))

    def on_reply(self, env: Envelope, peer: bytes, node: str) -> bool:
        """An agent's ``ok``/``error`` for a relayed request; False if it is not one of ours.

        Only the node's authenticated agent, on the connection the request went to, may answer
        it, and its answer must fit the reply type the request names: anything else is
        dropped, not passed to the user."""
        p = self.pending.get(env.id)
        if p is None or p.node_peer != peer or p.node != node:
            return False
        self._drop(env.id)
        reply = env.msg
        if isinstance(reply, Ok):
            try:
                result_of(p.request, reply)
            except ProtocolError as exc:
                log.warning("node %s answered %s with a malformed reply: %s", p.node, p.request.TYPE, exc.reason)
                reply = Error("protocol", f"node {p.node} answered with a malformed reply")
        self._to_client(p, reply)
        return True

    def on_output(self, msg: ExecOutput, peer: bytes, node: str) -> None:
        p = self.pending.get(msg.request)
        if p is not None and p.node_peer == peer and p.node == node:
            self._to_client(p, ExecOutput(p.client_id, msg.stream, msg.data))

    def on_input(self, msg: ExecInput | ExecResize, client: bytes) -> None:
        """The user's input to a running exec that asked for it: passed on to its agent under
        the relayed request's id. Only the connection that started the exec may feed it."""
        rid = self.by_client.get((client, msg.request))
        p = self.pending.get(rid) if rid is not None else None
        if rid is None or p is None or not isinstance(p.request, NodeExec):
            return
        if isinstance(msg, ExecInput) and not p.request.stdin and not p.request.tty:
            return
        if isinstance(msg, ExecResize) and not p.request.tty:
            return
        self.send(p.node_peer, encode(replace(msg, request=rid), id=new_id(), sender=self.sender))

    def _drop(self, rid: str) -> Pending:
        p = self.pending.pop(rid)
        self.by_client.pop((p.client, p.client_id), None)
        return p

    def expire(self, now: float) -> None:
        for rid, p in list(self.pending.items()):
            if now > p.deadline:
                self._drop(rid)
                log.warning("node %s did not answer a relayed request in time", p.node)
                self._to_client(p, Error("timeout", f"node {p.node} did not answer in time"))

    def node_lost(self, node: str) -> None:
        for rid, p in list(self.pending.items()):
            if p.node == node:
                self._drop(rid)
                self._to_client(p, Error("node-down", f"node {node} went down"))


__all__ = ["DEFERRED", "Deferred", "Ok", "Relay"]
