"""Slices: ``create``, ``plan`` (dry run), ``list``, ``show``, ``delete``, ``renew``, and the
views a client gets of them."""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any, cast

from controller import access, quota
from controller.api.nodes import paged
from controller.cluster import Cluster
from controller.placement import Plan
from controller.records import SliceRecord, SliverRecord
from controller.relay import DEFERRED, Deferred
from controller.rows import SLIVER_COLUMNS, km_rounded, place_fields, prepared, sliver_row, sliver_view
from controller.steps import Stepped, chunked, complete
from controller.truststore import Limits, Principal
from controller.waits import Waiter
from slices.errors import NotFound, SliceMeshError
from slices.geovec import nearest_other_km
from slices.protocol import (
    CreateSlice,
    Deleted,
    DeleteSlice,
    Event,
    ListSlices,
    PlanRow,
    PlanSlice,
    PlanView,
    Released,
    Renewed,
    RenewSlice,
    ShowSlice,
    SliceList,
    SliceSummary,
    SliceView,
    SliverView,
    WaitSlice,
)
from slices.spec import SliceSpec

if TYPE_CHECKING:
    from controller.api import Call, Context, Handler, Replay

HIDDEN = "(hidden)"


def redacted(raw: dict[str, Any], *, env: bool) -> dict[str, Any]:
    """The submitted spec as a viewer may see it: secret values never, env values only when
    ``env`` (the viewer may manage the slice)."""
    out = dict(raw)
    if isinstance(out.get("secrets"), dict):
        out["secrets"] = dict.fromkeys(out["secrets"], HIDDEN)
    if not env and isinstance(out.get("env"), dict):
        out["env"] = dict.fromkeys(out["env"], HIDDEN)
    return out


def slice_summary(sl: SliceRecord) -> SliceSummary:
    return SliceSummary(
        name=sl.name,
        owner=sl.owner,
        site=sl.site,
        description=sl.spec.description,
        state=sl.state,
        created=sl.created,
        expires=sl.expires,
        isolation=sl.spec.isolation,
        image=sl.spec.image,
        slivers_wanted=sl.spec.placement.count,
        slivers_placed=len(sl.slivers),
    )


TIMELINE = 200  # events a view shows: the newest


def timeline(cluster: Cluster, name: str) -> list[Event]:
    return [Event(ts=ts, event=kind, sliver=sliver, node=node, detail=detail) for sliver, node, ts, kind, detail in cluster.store.events(name, TIMELINE)]


def problem(cluster: Cluster, sl: SliceRecord) -> str | None:
    """Why a slice is not running: its slivers' reasons, the same explanation a refusal gives."""
    if sl.state in ("running", "pending", "expired"):
        return None
    reasons: dict[str, int] = {}
    for sid in sl.slivers:
        sliver = cluster.slivers[sid]
        if sliver.state != "running" and sliver.reason:
            reasons[sliver.reason] = reasons.get(sliver.reason, 0) + 1
    return "; ".join(f"{n} sliver{'s' if n > 1 else ''}: {why}" for why, n in sorted(reasons.items(), key=lambda kv: -kv[1])[:5]) or None


POINTS_CHUNK = 2500  # slivers' places looked up between steps of a view
RELEASED_CHUNK = 1000  # a delete's released slivers packed between steps of its answer: ~1 ms


def slice_view(cluster: Cluster, sl: SliceRecord, *, env: bool = False) -> SliceView:
    return complete(slice_view_steps(cluster, sl, env=env))


def slice_view_steps(
    cluster: Cluster, sl: SliceRecord, *, env: bool = False, brief: bool = False, pack: bool = False, arrays: bool = False
) -> Generator[None, None, SliceView]:
    """A slice as ``show`` gives it, built in steps (``steps.py``): the slice-wide parts and the
    nearest-peer distances (vectorised) at once, the sliver rows a chunk per step (``pack``:
    and packed for the wire as they are made, for a reply; ``arrays`` too: as rows of
    ``SLIVER_COLUMNS``). ``brief``: the slice-wide parts only (no rows, no timeline)."""
    slivers = [] if brief else [cluster.slivers[s] for s in sl.slivers]
    points: list[tuple[float, float] | None] = []  # where each sliver's node is (None: removed meanwhile)
    for i, s in enumerate(slivers, 1):
        rec = cluster.registry.nodes.get(s.node)
        points.append(None if rec is None else (rec.info.location.lat, rec.info.location.lon))
        if i % POINTS_CHUNK == 0:
            yield  # 10,000 slivers' places were 20-30 ms of one step
    near = iter(nearest_other_km([p for p in points if p is not None]))
    nearest = [None if p is None else next(near) for p in points]
    big = len(slivers) > POINTS_CHUNK
    if big:
        yield  # the distances of 10,000 slivers, their timeline and problem, and their first rows were 30-40 ms of one loaded step
    summary = slice_summary(sl)
    events = [] if brief else timeline(cluster, sl.name)
    problem_now = problem(cluster, sl)
    if big:
        yield
    by_sliver: dict[str, list[Event]] = {}
    for e in events:
        if e.sliver is not None:
            by_sliver.setdefault(e.sliver, []).append(e)

    arrays = arrays and pack

    live, nodes = cluster.slivers, cluster.registry.nodes

    def row(pair: tuple[SliverRecord, float | None]) -> SliverView | bytes | None:
        s, km = pair
        sid = s.spec.id
        rec = nodes.get(s.node)
        if rec is None or live.get(sid) is not s:
            return None  # deleted (or its node removed) between steps
        if pack:  # packed for a reply
            return sliver_row(cluster, s, km, by_sliver.get(sid), arrays, rec)
        return sliver_view(cluster, s, km, by_sliver.get(sid))  # records for the caller

    rows = cast("list[SliverView]", (yield from chunked(list(zip(slivers, nearest, strict=True)), row, pack=pack)))
    return SliceView(
        **vars(summary),
        resources=sl.spec.resources,
        partial=sl.partial,
        spec=redacted(sl.raw, env=env),
        slivers=rows,
        timeline=[e for e in events if e.sliver is None],
        problem=problem_now,
        columns=SLIVER_COLUMNS if arrays else None,
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
            km_to_nearest_peer=km_rounded(km),
        )
        for a, info, km in zip(plan.assignments, infos, nearest, strict=True)
    ]
    return PlanView(name=spec.name, wanted=plan.wanted, placed=len(plan.assignments), slivers=rows, explanation=[r.text() for r in plan.reports])


def site_use(cluster: Cluster, site: str) -> quota.Use:
    use = quota.Use()
    for sl in cluster.slices.values():
        if sl.site == site and sl.state != "expired":
            res = sl.spec.resources
            n = len(sl.slivers)
            use = use + quota.Use(1, n, res.cpu * n, res.memory * n)
    return use


def code_refusal(ctx: Context, spec: SliceSpec, site: str) -> None:
    """A slice's code must be uploaded (``slicemesh create`` does it), and its site's bundles
    stay under ``code_site_max_bytes``."""
    if spec.code_path is not None:
        raise SliceMeshError("code.path names a file on your machine: `slicemesh create` uploads it and sends its digest", code="invalid-spec")
    if spec.code is None:
        return
    if not ctx.content.has(spec.code.digest):
        raise SliceMeshError(f"code bundle {spec.code.digest[:12]} is not uploaded (or not complete): `slicemesh create` uploads it first", code="invalid-spec")
    used = {s.spec.code.digest: s.spec.code.size for s in ctx.cluster.slices.values() if s.site == site and s.spec.code is not None}
    total = sum(used.values()) + (0 if spec.code.digest in used else spec.code.size)
    if total > ctx.settings.code_site_max_bytes:
        raise SliceMeshError(f"site {site}: code bundles would take {total} bytes, over its {ctx.settings.code_site_max_bytes} (code_site_max_bytes)", code="quota")


def handlers(ctx: Context) -> dict[type, Handler]:
    cluster, clock, keyring, settings = ctx.cluster, ctx.clock, ctx.keyring, ctx.settings

    def limits(site: str) -> Limits:
        for lim in keyring.trust.limits():
            if lim.name == site:
                return lim
        return Limits(site, settings.site_max_slices, settings.site_max_slivers, settings.site_max_cpu, settings.site_max_memory, settings.slice_max_nodes)

    def owner_of(me: Principal, raw: dict[str, Any]) -> Principal:
        """Whose slice this is: the caller, or (admins and PIs) a user of theirs named in ``owner``."""
        asked = raw.get("owner")
        if asked is None or asked == me.name:
            return me
        owner = keyring.named("user", str(asked)) if isinstance(asked, str) else None
        if owner is None:
            raise SliceMeshError(f"owner {str(asked)[:64]!r} is not a user of this testbed", code="invalid-spec")
        if access.is_admin(me) or (me.role == "pi" and owner.site == me.site):
            return owner
        raise SliceMeshError(f"{me.who} may not create slices for {owner.who} (only an admin, or a PI of site {owner.site})", code="forbidden")

    def visible(me: Principal, name: str) -> SliceRecord:
        sl = cluster.get(name)
        if not access.can_see(me, sl.owner, sl.site):
            raise NotFound(f"no slice named {name!r}")  # another site's slice: not even its existence
        return sl

    def managed(me: Principal, name: str, verb: str) -> SliceRecord:
        sl = visible(me, name)
        refusal = access.manage_refusal(me, f"slice {name}", sl.owner, sl.site)
        if refusal is not None:
            raise SliceMeshError(f"cannot {verb}: {refusal}", code="forbidden")
        return sl

    def place(msg: CreateSlice | PlanSlice, call: Call, *, dry_run: bool) -> Generator[None, None, tuple[Any, ...]]:
        me = call.user()
        owner = owner_of(me, msg.spec)
        site = owner.site or "-"
        raw = {**msg.spec, "owner": owner.name}

        def check(spec: SliceSpec, plan: Plan) -> None:
            code_refusal(ctx, spec, site)
            if access.is_admin(owner):
                return
            res, n = spec.resources, len(plan.assignments)
            refusal = quota.refusal(limits(site), site_use(cluster, site), quota.Use(1, n, res.cpu * n, res.memory * n))
            if refusal is not None:
                raise SliceMeshError(refusal, code="quota")

        note = ctx.note(call, "create", f"slice {raw.get('name')}", f"owner {owner.name}, site {site}")
        return (yield from cluster.create_steps(raw, owner.name, None if dry_run else call.id, clock(), dry_run=dry_run, site=site, check=check, note=note))

    def create(msg: CreateSlice, call: Call) -> Stepped:
        # Placed, written, then viewed, in steps: the server runs the first step at once
        # (a small slice is placed and written in it) and holds other changes back until
        # the write.
        _, rec, _ = yield from place(msg, call, dry_run=False)
        yield  # written; the view is built with the other big replies, after this turn's messages
        if msg.brief:  # its rows come with a show: their kept parts made now, not then
            yield from prepared(cluster, list(rec.slivers))
        return (yield from slice_view_steps(cluster, rec, env=True, brief=msg.brief, pack=True))

    def plan(msg: PlanSlice, call: Call) -> Stepped:
        spec, _, result = yield from place(msg, call, dry_run=True)
        return plan_view(cluster, result, spec)

    def list_slices(msg: ListSlices, call: Call) -> Stepped:
        me = call.user()
        mine = {n: s for n, s in cluster.slices.items() if access.can_see(me, s.owner, s.site)}

        def steps() -> Stepped:
            views, total, nxt = yield from paged(mine, msg.after, msg.limit, slice_summary)
            return SliceList(slices=views, total=total, next=nxt)

        return steps()

    def show(msg: ShowSlice, call: Call) -> Stepped:
        me = call.user()
        sl = visible(me, msg.name)  # refused now; the view is built in steps
        return slice_view_steps(cluster, sl, env=access.can_manage(me, sl.owner, sl.site), pack=True, arrays=msg.rows == "arrays")

    def delete(msg: DeleteSlice, call: Call) -> Stepped:
        # Deleted in one step (a very big slice's lookups in a step before it); a big slice's
        # rows are then removed from the store in steps, while other changes wait, and the
        # answer comes once they are gone.
        sl = managed(call.user(), msg.name, "delete")
        with cluster.held():  # a change held back behind it is answered after it
            released = yield from cluster.delete_steps(msg.name, note=ctx.note(call, "delete", f"slice {msg.name}", f"{len(sl.slivers)} slivers released"))
            if sl.spec.code is not None:  # its bundle may be unused now (only then: a delete under churn costs no store scan)
                ctx.content.collect({s.spec.code.digest for s in cluster.slices.values() if s.spec.code is not None}, clock())
            return (yield from deleted_reply_steps(msg.name, released))

    def renew(msg: RenewSlice, call: Call) -> Renewed:
        sl = managed(call.user(), msg.name, "renew")
        if len(sl.spec.description.strip()) < settings.renew_min_description:
            raise SliceMeshError(
                f"renewal refused: slice {msg.name}'s description has {len(sl.spec.description.strip())} characters; "
                f"a renewed slice needs one of at least {settings.renew_min_description} saying what it is for",
                code="forbidden",
            )
        renewed, capped = cluster.renew(msg.name, msg.seconds, clock(), note=ctx.note(call, "renew", f"slice {msg.name}", f"by {msg.seconds} s"))
        return Renewed(name=renewed.name, expires=renewed.expires, capped=capped)

    def wait(msg: WaitSlice, call: Call) -> Deferred:
        me = call.user()
        if msg.name in cluster.slices or msg.until != "deleted":
            visible(me, msg.name)  # not-found for a slice the caller may not see
        waiter = Waiter(call.peer, call.id, call.key, msg.name, msg.until, msg.seen, clock() + msg.timeout)
        ctx.waits.park(waiter, cluster.progress(msg.name))
        return DEFERRED  # answered by the waits (at once if already done)

    return {CreateSlice: create, PlanSlice: plan, ListSlices: list_slices, ShowSlice: show, DeleteSlice: delete, RenewSlice: renew, WaitSlice: wait}


def replays(ctx: Context) -> dict[type, Replay]:
    """Answers to a create, delete or renew that was applied just before the controller died."""
    cluster = ctx.cluster

    def created(msg: CreateSlice, call: Call, summary: dict[str, Any]) -> SliceView:
        name = msg.spec.get("name")
        sl = cluster.slices.get(name) if isinstance(name, str) else None
        if sl is None or sl.request_id != call.id:
            raise NotFound(f"this request created slice {name!r}, which has since been deleted")
        return slice_view(cluster, sl, env=True)

    def deleted(msg: DeleteSlice, call: Call, summary: dict[str, Any]) -> Deleted:
        released = summary.get("released")
        if isinstance(released, list):
            return deleted_reply(msg.name, [(str(sid), str(node)) for sid, node in released])
        return Deleted(name=msg.name, slivers=int(summary.get("slivers", 0)))  # applied by a controller before 2.5

    def renewed(msg: RenewSlice, call: Call, summary: dict[str, Any]) -> Renewed:
        return Renewed(name=msg.name, expires=float(summary["expires"]), capped=bool(summary.get("capped", False)))

    return {CreateSlice: created, DeleteSlice: deleted, RenewSlice: renewed}


def deleted_reply(name: str, released: list[tuple[str, str]]) -> Deleted:
    return complete(deleted_reply_steps(name, released))


def deleted_reply_steps(name: str, released: list[tuple[str, str]]) -> Generator[None, None, Deleted]:
    """The answer to a delete, its released slivers packed ``RELEASED_CHUNK`` a step: made as
    records and packed at the end, 10,000 of them held the loop 30-45 ms in the step that
    answered (twice that on a loaded machine)."""
    rows = yield from chunked(released, lambda r: {"id": r[0], "node": r[1]}, RELEASED_CHUNK, pack=True)
    return Deleted(name=name, slivers=len(released), released=cast("list[Released]", rows))
