"""Slices' code bundles: users upload them, nodes fetch them (contentstore.py, docs/code.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from controller.api.agents import UnknownNode
from controller.registry import NodeRecord
from slices.errors import SliceMeshError
from slices.protocol import CodeAck, CodeChunk, CodeState, FetchCode, UploadCode
from slices.protocol.code import CHUNK

if TYPE_CHECKING:
    from controller.api import Call, Context, Handler


def handlers(ctx: Context) -> dict[type, Handler]:
    cluster, content = ctx.cluster, ctx.content

    def upload(msg: UploadCode, call: Call) -> CodeState:
        call.user()  # any user may upload; a slice may refer only to a complete bundle
        have = content.put(msg.digest, msg.size, msg.offset, msg.data) if msg.data or msg.size == 0 else content.have(msg.digest)
        return CodeState(digest=msg.digest, size=msg.size, have=have, complete=content.has(msg.digest))

    def own_node(name: str, call: Call) -> NodeRecord | None:
        """Node ``name``, if this call comes from its agent's key and registered connection."""
        rec = cluster.registry.get(name)
        if rec is None or call.principal is None or call.principal.name != name or rec.peer != call.peer:
            return None
        return rec

    def fetch(msg: FetchCode, call: Call) -> CodeChunk:
        """Only to the node's own agent, and only a bundle one of its slivers needs."""
        rec = own_node(msg.node, call)
        if rec is None:
            raise UnknownNode(f"node {msg.node!r} is not registered from this connection; register again")
        needs = any((sp := cluster.slivers[s].spec).code is not None and sp.code.digest == msg.digest for s in rec.slivers if s in cluster.slivers)
        if not needs or not content.has(msg.digest):
            raise SliceMeshError(f"no sliver of node {msg.node} needs code bundle {msg.digest[:12]}", code="not-found")
        data, size = content.read(msg.digest, msg.offset, CHUNK)
        return CodeChunk(digest=msg.digest, offset=msg.offset, size=size, data=data)

    def ack(msg: CodeAck, call: Call) -> None:
        if own_node(msg.node, call) is None:
            return  # a notice: nothing to answer
        ctx.pusher.ack(msg.node, call.peer, msg.digest, msg.have)

    return {UploadCode: upload, FetchCode: fetch, CodeAck: ack}
