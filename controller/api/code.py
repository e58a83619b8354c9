"""Slices' code bundles: users upload them, nodes fetch them (contentstore.py, docs/code.md)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from controller.api.agents import UnknownNode
from controller.registry import NodeRecord
from slices.errors import SliceMeshError
from slices.migration import ENDPOINT
from slices.protocol import CodeAck, CodeChunk, CodeState, FetchCode, SendCode, UploadCode
from slices.protocol.code import CHUNK

if TYPE_CHECKING:
    from controller.api import Call, Context, Handler


def handlers(ctx: Context) -> dict[type, Handler]:
    cluster, content, swarm = ctx.cluster, ctx.content, ctx.swarm

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
        size = content.size(msg.digest)
        endpoint = f"{rec.address}:{msg.port}"
        can_listen = bool(msg.port and msg.token) and re.fullmatch(ENDPOINT, endpoint) is not None
        now = ctx.clock()
        route = swarm.route(msg.digest, msg.node, msg.offset, can_listen, now, up)
        if route.kind == "peer":
            holder = cluster.registry.get(route.peer)
            assert holder is not None and holder.peer is not None  # ``up`` said so
            ctx.pusher.tell(holder.peer, SendCode(digest=msg.digest, size=size, to=msg.node, endpoint=endpoint, token=msg.token))
            return CodeChunk(digest=msg.digest, offset=msg.offset, size=size, peer=route.peer)
        if route.kind == "wait":
            return CodeChunk(digest=msg.digest, offset=msg.offset, size=size, wait=route.wait)
        data, size = content.read(msg.digest, msg.offset, CHUNK)
        if msg.offset + len(data) >= size:
            swarm.finishing(msg.digest, msg.node, now)
        return CodeChunk(digest=msg.digest, offset=msg.offset, size=size, data=data)

    def up(name: str) -> bool:
        rec = cluster.registry.get(name)
        return rec is not None and rec.state == "up" and rec.peer is not None

    def ack(msg: CodeAck, call: Call) -> None:
        if own_node(msg.node, call) is None:
            return  # a notice: nothing to answer
        if msg.held is True:
            swarm.held(msg.digest, msg.node)
        elif msg.held is False:
            swarm.dropped(msg.digest, msg.node)
        else:
            ctx.pusher.ack(msg.node, call.peer, msg.digest, msg.have)

    return {UploadCode: upload, FetchCode: fetch, CodeAck: ack}
