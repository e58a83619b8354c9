"""The audit log: who did what, when, from which key (admins see all; others their own)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from controller import access
from slices.protocol import AuditEntry, AuditList, ListAudit

if TYPE_CHECKING:
    from controller.api import Call, Context, Handler


def handlers(ctx: Context) -> dict[type, Handler]:
    trust = ctx.keyring.trust

    def list_audit(msg: ListAudit, call: Call) -> AuditList:
        me = call.user()
        rows = trust.audit_entries(msg.limit, msg.before)
        entries = [AuditEntry(id=i, ts=ts, who=who, key=key, action=a, target=t, detail=d) for i, ts, who, key, a, t, d in rows]
        if not access.is_admin(me):
            entries = [e for e in entries if e.key == me.fingerprint]
        nxt = rows[-1][0] if len(rows) == msg.limit else None
        return AuditList(entries=entries, next=nxt)

    return {ListAudit: list_audit}
