"""The cluster as users see it: ``nodes``, ``sites``, every sliver (``top``) and ``ping``."""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Generator, Sequence
from operator import attrgetter
from typing import TYPE_CHECKING, Any, TypeVar, cast

from controller import access
from controller.api.keys import admin
from controller.cluster import Cluster
from controller.records import SliverRecord
from controller.rows import NODE_COLUMNS, TOP_COLUMNS, node_row, node_view, place_fields, top_fields, top_row
from controller.steps import CHUNK, Stepped, chunked
from slices import __version__
from slices.errors import SliceMeshError
from slices.protocol import (
    PROTOCOL_VERSION,
    ListNodes,
    ListSites,
    ListSlivers,
    NodeAdmin,
    NodeList,
    NodeView,
    Ping,
    Pong,
    SiteList,
    SiteView,
    SliverList,
    SliverRow,
)

if TYPE_CHECKING:
    from controller.api import Call, Context, Handler

T = TypeVar("T")
GROUP_CHUNK = 2_000  # slivers grouped by slice per step (a dict lookup and an append each)


def page(names: Sequence[str], after: str | None, limit: int | None) -> tuple[int, int]:
    """The [start, stop) slice of sorted ``names`` for one page after ``after``."""
    start = bisect.bisect_right(names, after) if after is not None else 0
    stop = len(names) if limit is None else min(len(names), start + limit)
    return start, stop


def paged(
    items: dict[str, T], after: str | None, limit: int | None, view: Callable[[T], Any], names: list[str] | None = None
) -> Generator[None, None, tuple[list[Any], int, str | None]]:
    """One page of ``items`` in name order, each through ``view``, built in steps
    (``steps.py``) and packed as built (a reply's rows); returns (views, total, next). An item
    gone between steps is left out. ``names``: ``items``' keys sorted, if the caller keeps them."""
    names = sorted(items) if names is None else names
    start, stop = page(names, after, limit)
    views = yield from chunked(names[start:stop], lambda n: view(r) if (r := items.get(n)) is not None else None, pack=True)
    return views, len(names), names[stop - 1] if stop < len(names) else None


def by_slice_and_node(slivers: list[SliverRecord], seen: set[str]) -> Generator[None, None, list[SliverRecord]]:
    """The slivers of the ``seen`` slices, ordered by slice, then node, in steps: grouped a
    chunk a step, then each slice's group sorted in a step of its own (one sort of 12,000
    slivers by (slice, node) was 30-60 ms of a loaded loop's step)."""
    groups: dict[str, list[SliverRecord]] = {}
    for i, s in enumerate(slivers, 1):
        if s.spec.slice in seen:
            groups.setdefault(s.spec.slice, []).append(s)
        if i % GROUP_CHUNK == 0:
            yield
    ordered: list[SliverRecord] = []
    for name in sorted(groups):
        group = groups[name]
        group.sort(key=attrgetter("node"))
        ordered += group
        if len(group) > CHUNK:
            yield
    return ordered


def sites_view(cluster: Cluster) -> list[SiteView]:
    sites: dict[str, dict[str, Any]] = {}
    for rec in cluster.registry:
        place = place_fields(rec.info)
        s = sites.setdefault(rec.info.site, {"name": place.pop("site"), **place, "nodes": 0, "up": 0})
        s["nodes"] += 1
        s["up"] += rec.state == "up"
    return [SiteView(**s) for _, s in sorted(sites.items())]


def handlers(ctx: Context) -> dict[type, Handler]:
    cluster = ctx.cluster

    def node_admin(msg: NodeAdmin, call: Call) -> NodeView:
        admin(call)
        rec = cluster.get_node(msg.name)
        if msg.action == "remove":
            held = cluster.vacate(rec, ctx.clock(), force=msg.force)
            if held:
                raise SliceMeshError(
                    f"node {rec.name} holds {len(held)} slivers ({', '.join(held[:5])}{', ...' if len(held) > 5 else ''}): "
                    + ("they fit nowhere else; delete their slices or add capacity" if msg.force else "drain it first, or remove --force to move them now"),
                    code="conflict",
                )
            view = node_view(cluster, rec)
            cluster.remove_node(rec)
            ctx.keyring.revoke_agent(rec.name, call.who)
            ctx.record(call, "node remove", f"node {rec.name}", "its key is revoked" + (" (forced)" if msg.force else ""))
            return view
        state = {"cordon": "cordoned", "uncordon": "active", "drain": "draining"}[msg.action]
        cluster.set_admin(rec, state)
        ctx.record(call, f"node {msg.action}", f"node {rec.name}")
        return node_view(cluster, rec)

    def nodes(msg: ListNodes, call: Call) -> Stepped:
        arrays = msg.rows == "arrays"
        views, total, nxt = yield from paged(cluster.registry.nodes, msg.after, msg.limit, lambda r: node_row(cluster, r, arrays), cluster.registry.names())
        return NodeList(nodes=views, total=total, next=nxt, columns=NODE_COLUMNS if arrays else None)

    def sites(msg: ListSites, call: Call) -> SiteList:
        return SiteList(sites=sites_view(cluster))

    def slivers(msg: ListSlivers, call: Call) -> Stepped:
        me = call.user()
        seen = {n for n, sl in cluster.slices.items() if access.can_see(me, sl.owner, sl.site)}
        ordered = yield from by_slice_and_node(list(cluster.slivers.values()), seen)

        arrays = msg.rows == "arrays"

        def row(s: SliverRecord) -> dict[str, Any] | bytes | None:
            if cluster.slivers.get(s.id) is not s:
                return None  # its slice went away between steps
            return top_row(s) if arrays else top_fields(s)

        rows = yield from chunked(ordered, row, pack=True)
        return SliverList(slivers=cast("list[SliverRow]", rows), columns=TOP_COLUMNS if arrays else None)

    def ping(msg: Ping, call: Call) -> Pong:
        me = call.principal
        now = time.perf_counter()
        return Pong(
            version=__version__,
            protocol=PROTOCOL_VERSION,
            nodes=len(cluster.registry),
            slices=len(cluster.slices),
            up=cluster.registry.up_count(),
            principal=me.who if me else None,
            role=(me.role or me.kind) if me else None,
            code_bytes_out=ctx.content.bytes_read,
            code_peer_sends=ctx.swarm.peer_sends,
            user_wait_max_ms=round(ctx.user_waits.worst(now) * 1e3, 1),
            user_waits_over_50ms=ctx.user_waits.over(now),
        )

    return {ListNodes: nodes, ListSites: sites, ListSlivers: slivers, Ping: ping, NodeAdmin: node_admin}
