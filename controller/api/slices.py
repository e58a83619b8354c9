"""Slices: ``create``, ``plan`` (dry run), ``list``, ``show``, ``delete``, ``renew``, and the
views a client gets of them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from controller.api.nodes import paged, place_fields
from controller.cluster import Cluster, SliceRecord, SliverRecord
from controller.placement import Plan
from slices.geo import haversine_km, nearest_other_km
from slices.protocol import (
    CreateSlice,
    Deleted,
    DeleteSlice,
    ListSlices,
    PlanRow,
    PlanSlice,
    PlanView,
    Renewed,
    RenewSlice,
    ShowSlice,
    SliceList,
    SliceSummary,
    SliceView,
    SliverView,
)
from slices.spec import SliceSpec

if TYPE_CHECKING:
    from controller.api import Call, Context, Handler


def _km(value: float | None) -> float | None:
    return round(value, 1) if value is not None else None


def slice_summary(sl: SliceRecord) -> SliceSummary:
    return SliceSummary(
        name=sl.name,
        owner=sl.owner,
        description=sl.spec.description,
        state=sl.state,
        created=sl.created,
        expires=sl.expires,
        isolation=sl.spec.isolation,
        image=sl.spec.image,
        slivers_wanted=sl.spec.placement.count,
        slivers_placed=len(sl.slivers),
    )


def sliver_view(cluster: Cluster, sl: SliverRecord, nearest: float | None) -> SliverView:
    info = cluster.registry.nodes[sl.node].info
    loc = info.location
    req = cluster.request_of(sl)
    km = haversine_km(req.lat, req.lon, loc.lat, loc.lon) if req.kind == "near" and req.lat is not None and req.lon is not None else None
    return SliverView(
        **place_fields(info),
        node=sl.node,
        id=sl.id,
        backend=info.offers.get(sl.spec.isolation, "?"),
        state=sl.state,
        reason=sl.reason,
        request=req.describe(),
        km_to_point=_km(km),
        km_to_nearest_peer=_km(nearest),
        usage=sl.usage,
    )


def slice_view(cluster: Cluster, sl: SliceRecord) -> SliceView:
    slivers = [cluster.slivers[s] for s in sl.slivers]
    infos = [cluster.registry.nodes[s.node].info.location for s in slivers]
    nearest = nearest_other_km([(loc.lat, loc.lon) for loc in infos])
    summary = slice_summary(sl)
    return SliceView(
        **vars(summary),
        resources=sl.spec.resources,
        partial=sl.partial,
        spec=sl.raw,
        slivers=[sliver_view(cluster, s, km) for s, km in zip(slivers, nearest, strict=True)],
    )


def plan_view(cluster: Cluster, plan: Plan, spec: SliceSpec) -> PlanView:
    requests = spec.placement.requests()
    infos = [cluster.registry.nodes[a.node].info for a in plan.assignments]
    nearest = nearest_other_km([(i.location.lat, i.location.lon) for i in infos])
    rows = [
        PlanRow(
            **place_fields(info),
            node=a.node,
            request=requests[a.request].describe(),
            backend=info.offers.get(spec.isolation, "?"),
            km_to_nearest_peer=_km(km),
        )
        for a, info, km in zip(plan.assignments, infos, nearest, strict=True)
    ]
    return PlanView(name=spec.name, wanted=plan.wanted, placed=len(plan.assignments), slivers=rows, explanation=[r.text() for r in plan.reports])


def handlers(ctx: Context) -> dict[type, Handler]:
    cluster, clock = ctx.cluster, ctx.clock

    def create(msg: CreateSlice, call: Call) -> SliceView:
        _, rec, _ = cluster.create(msg.spec, None, call.id, clock())
        assert rec is not None
        return slice_view(cluster, rec)

    def plan(msg: PlanSlice, call: Call) -> PlanView:
        spec, _, result = cluster.create(msg.spec, None, None, clock(), dry_run=True)
        return plan_view(cluster, result, spec)

    def list_slices(msg: ListSlices, call: Call) -> SliceList:
        views, total, nxt = paged(cluster.slices, msg.after, msg.limit, slice_summary)
        return SliceList(slices=views, total=total, next=nxt)

    def show(msg: ShowSlice, call: Call) -> SliceView:
        return slice_view(cluster, cluster.get(msg.name))

    def delete(msg: DeleteSlice, call: Call) -> Deleted:
        released = len(cluster.get(msg.name).slivers)
        sl = cluster.delete(msg.name)
        return Deleted(name=sl.name, slivers=released)

    def renew(msg: RenewSlice, call: Call) -> Renewed:
        sl, capped = cluster.renew(msg.name, msg.seconds, clock())
        return Renewed(name=sl.name, expires=sl.expires, capped=capped)

    return {CreateSlice: create, PlanSlice: plan, ListSlices: list_slices, ShowSlice: show, DeleteSlice: delete, RenewSlice: renew}
