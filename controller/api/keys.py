"""Keys: list, accept, reject, revoke, pre-seed (``trust``) and one-time enrolment tokens.
Admins only; every change goes to the audit log."""

from __future__ import annotations

from typing import TYPE_CHECKING

from controller import access
from controller.keyring import Refused
from controller.truststore import Principal
from slices.protocol import AcceptKey, KeyChanged, KeyList, KeyView, ListKeys, MakeToken, RejectKey, RevokeKey, Token, TrustKeys

if TYPE_CHECKING:
    from controller.api import Call, Context, Handler


def admin(call: Call) -> Principal:
    me = call.user()
    if not access.is_admin(me):
        raise Refused(f"{me.who} is a {me.role}; only admins manage keys, users and sites")
    return me


def key_view(p: Principal) -> KeyView:
    return KeyView(
        name=p.name, kind=p.kind, state=p.state, fingerprint=p.fingerprint, role=p.role, site=p.site, address=p.address, created=p.created, updated=p.updated
    )


def handlers(ctx: Context) -> dict[type, Handler]:
    keyring = ctx.keyring

    def list_keys(msg: ListKeys, call: Call) -> KeyList:
        admin(call)
        return KeyList(keys=[key_view(p) for p in sorted(keyring, key=lambda p: (p.kind, p.name, p.created))])

    def change(call: Call, name: str, kind: str, state: str, verb: str) -> KeyChanged:
        admin(call)
        p = keyring.set_state(kind, name, state, source=call.who)
        ctx.record(call, f"key {verb}", f"{kind} {name}", f"key {p.fingerprint}")
        return KeyChanged(name=name, kind=kind, state=state)

    def accept(msg: AcceptKey, call: Call) -> KeyChanged:
        return change(call, msg.name, "agent", "accepted", "accept")

    def reject(msg: RejectKey, call: Call) -> KeyChanged:
        return change(call, msg.name, "agent", "rejected", "reject")

    def revoke(msg: RevokeKey, call: Call) -> KeyChanged:
        me = admin(call)
        if msg.kind == "user" and msg.name == me.name:
            raise Refused("an admin may not revoke their own key (another admin can)")
        result = change(call, msg.name, msg.kind, "revoked", "revoke")
        if msg.kind == "agent":
            ctx.cluster.revoke_node(msg.name, ctx.clock())
        return result

    def trust(msg: TrustKeys, call: Call) -> KeyChanged:
        admin(call)
        n = keyring.trust_agents(msg.agents, call.address)
        names = sorted(msg.agents)
        ctx.record(call, "key trust", f"{n} agents", ", ".join(names[:8]) + (" ..." if n > 8 else ""))
        return KeyChanged(name=names[0] if n == 1 else f"{n} agents", kind="agent", state="accepted", count=n)

    def token(msg: MakeToken, call: Call) -> Token:
        admin(call)
        value, expires = keyring.make_token(msg.node, msg.ttl)
        ctx.record(call, "token", f"node {msg.node}" if msg.node else "any node", f"valid {msg.ttl:g} s")
        return Token(token=value, node=msg.node, expires=expires)

    return {ListKeys: list_keys, AcceptKey: accept, RejectKey: reject, RevokeKey: revoke, TrustKeys: trust, MakeToken: token}
