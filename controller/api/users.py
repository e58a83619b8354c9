"""Users and sites: who belongs where with which role, and each site's limits. Admins only."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from controller.api.keys import admin
from controller.api.slices import site_use
from controller.keyring import Conflict, Refused
from controller.truststore import Limits, Principal
from slices.errors import NotFound
from slices.protocol import AddUser, KeyChanged, ListPolicies, ListUsers, PolicyList, RemoveSite, RemoveUser, SetSite, SitePolicy, UserList, UserView

if TYPE_CHECKING:
    from controller.api import Call, Context, Handler


def user_view(p: Principal) -> UserView:
    return UserView(name=p.name, site=p.site or "-", role=p.role or "user", state=p.state, fingerprint=p.fingerprint, created=p.created)


def handlers(ctx: Context) -> dict[type, Handler]:
    keyring, settings, cluster = ctx.keyring, ctx.settings, ctx.cluster

    def defaults(name: str) -> Limits:
        return Limits(name, settings.site_max_slices, settings.site_max_slivers, settings.site_max_cpu, settings.site_max_memory, settings.slice_max_nodes)

    def stored(name: str) -> Limits | None:
        return next((lim for lim in keyring.trust.limits() if lim.name == name), None)

    def policy(lim: Limits) -> SitePolicy:
        use = site_use(cluster, lim.name)
        members = sum(1 for p in keyring if p.kind == "user" and p.site == lim.name and p.state == "accepted")
        return SitePolicy(
            name=lim.name,
            max_slices=lim.max_slices,
            max_slivers=lim.max_slivers,
            max_cpu=lim.max_cpu,
            max_memory=lim.max_memory,
            max_nodes_per_slice=lim.max_nodes_per_slice,
            used_slices=use.slices,
            used_slivers=use.slivers,
            used_cpu=use.cpu,
            used_memory=use.memory,
            users=members,
        )

    def add_user(msg: AddUser, call: Call) -> UserView:
        admin(call)
        if keyring.named("user", msg.name) is not None:
            raise Conflict(f"user {msg.name!r} exists (remove it first to change its key)")
        taken = keyring.by_key.get(msg.key)
        if taken is not None and taken.state in ("accepted", "pending"):
            raise Conflict(f"that key already belongs to {taken.who}")
        now = ctx.clock()
        p = Principal(msg.key, "user", msg.name, "accepted", role=msg.role, site=msg.site, address=call.address, created=now, updated=now)
        keyring.put(p)
        ctx.record(call, "user add", f"user {msg.name}", f"site {msg.site}, role {msg.role}, key {p.fingerprint}")
        return user_view(p)

    def remove_user(msg: RemoveUser, call: Call) -> KeyChanged:
        me = admin(call)
        p = keyring.named("user", msg.name)
        if p is None:
            raise NotFound(f"no user named {msg.name!r}")
        if p.key == me.key:
            raise Refused("an admin may not remove themselves (another admin can)")
        keyring.put(replace(p, state="revoked", updated=ctx.clock()))  # kept: the audit log names it
        ctx.record(call, "user remove", f"user {msg.name}", f"key {p.fingerprint}")
        return KeyChanged(name=msg.name, kind="user", state="revoked")

    def list_users(msg: ListUsers, call: Call) -> UserList:
        admin(call)
        return UserList(users=[user_view(p) for p in sorted(keyring, key=lambda p: p.name) if p.kind == "user"])

    def set_site(msg: SetSite, call: Call) -> SitePolicy:
        admin(call)
        base = stored(msg.name) or defaults(msg.name)
        changes = {k: getattr(msg, k) for k in ("max_slices", "max_slivers", "max_cpu", "max_memory", "max_nodes_per_slice") if getattr(msg, k) is not None}
        lim = replace(base, **changes)
        with keyring.trust.store.transaction():
            keyring.trust.put_limits(lim, ctx.clock())
            ctx.note(call, "site set", f"site {msg.name}", ", ".join(f"{k}={v:g}" for k, v in changes.items()) or "defaults")()
        return policy(lim)

    def remove_site(msg: RemoveSite, call: Call) -> KeyChanged:
        admin(call)
        if stored(msg.name) is None:
            raise NotFound(f"site {msg.name!r} has no limits of its own")
        members = [p.name for p in keyring if p.kind == "user" and p.site == msg.name and p.state == "accepted"]
        if members:
            raise Conflict(f"site {msg.name} still has users: {', '.join(sorted(members)[:5])}")
        with keyring.trust.store.transaction():
            keyring.trust.delete_limits(msg.name)
            ctx.note(call, "site remove", f"site {msg.name}")()
        return KeyChanged(name=msg.name, kind="site", state="removed")

    def list_policies(msg: ListPolicies, call: Call) -> PolicyList:
        me = call.user()
        names = {lim.name for lim in keyring.trust.limits()} | {p.site for p in keyring if p.kind == "user" and p.site}
        if me.role != "admin":
            names &= {me.site or ""}
        return PolicyList(sites=[policy(stored(n) or defaults(n)) for n in sorted(names)])

    return {AddUser: add_user, RemoveUser: remove_user, ListUsers: list_users, SetSite: set_site, RemoveSite: remove_site, ListPolicies: list_policies}
