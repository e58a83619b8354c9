"""``slicemesh orphans``: list, adopt or destroy what nodes still run for an earlier cluster."""

from __future__ import annotations

from typing import TYPE_CHECKING

from controller import orphans
from controller.api.keys import admin
from slices.protocol import OrphanList, Orphans, OrphanView

if TYPE_CHECKING:
    from controller.api import Call, Context, Handler


def handlers(ctx: Context) -> dict[type, Handler]:
    cluster = ctx.cluster

    def views(node: str | None) -> list[OrphanView]:
        return [
            OrphanView(node=n, id=s.id, slice=name, isolation=s.isolation)
            for name, members in sorted(orphans.adoptable(cluster, node).items())
            for n, s in sorted(members, key=lambda m: (m[0], m[1].id))
        ]

    def handle(msg: Orphans, call: Call) -> OrphanList:
        me = admin(call)
        if msg.node is not None:
            cluster.get_node(msg.node)  # not-found for a node that does not exist
        listed = views(msg.node)
        changed = 0
        if msg.action == "destroy":
            for rec in cluster.registry:
                if msg.node is None or rec.name == msg.node:
                    rec.drop_orphans |= set(rec.orphans)
                    changed += len(rec.orphans)
            ctx.record(call, "orphans destroy", msg.node or "every node", f"{changed} slivers")
        elif msg.action == "adopt":
            for name, members in sorted(orphans.adoptable(cluster, msg.node).items()):
                orphans.adopt(cluster, name, members, me.name, me.site, ctx.clock())
                changed += len(members)
                ctx.record(call, "orphans adopt", f"slice {name}", f"{len(members)} slivers")
        return OrphanList(orphans=listed, changed=changed)

    return {Orphans: handle}
