"""Every message type on the wire, grouped by topic; docs/protocol.md lists every type and
error code (a test keeps it complete).

``base`` holds what every message shares (registry, ``Ok``/``Error``, the version); the
topic modules hold each request with the records its reply carries, so one verb is read in
one place. The users' modules (slices, nodes, relay) are imported with the package; the
others (keys and users, the agents' own messages, code, moves) when one of their names is
first used (``__getattr__``): a CLI started for ``create`` does not build their 40 record
classes, a quarter of its start-up (~0.1 s). A process that must know every type (the
controller, a decoder that meets a type not loaded yet) calls ``load_all``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from slices.protocol.admin import (
        AcceptKey,
        AddUser,
        AuditEntry,
        AuditList,
        KeyChanged,
        KeyList,
        KeyView,
        ListAudit,
        ListKeys,
        ListPolicies,
        ListUsers,
        MakeToken,
        PolicyList,
        RejectKey,
        RemoveSite,
        RemoveUser,
        RevokeKey,
        SetSite,
        SitePolicy,
        Token,
        TrustKeys,
        UserList,
        UserView,
    )
    from slices.protocol.agents import Beat, Desired, Goodbye, Heartbeat, Peer, PeerChange, Pulse, Register, Report
    from slices.protocol.code import CodeAck, CodeChunk, CodeState, FetchCode, PushCode, SendCode, UploadCode
    from slices.protocol.moves import MigrateSlice, MovesBegun, MoveView
from slices.model import ROLES
from slices.protocol.base import PROTOCOL_MAJOR, PROTOCOL_MINOR, PROTOCOL_VERSION, REGISTRY, Error, Message, Ok, body_of, build, message, result_of
from slices.protocol.nodes import (
    ListNodes,
    ListSites,
    ListSlivers,
    NodeAdmin,
    NodeList,
    NodeView,
    OrphanList,
    Orphans,
    OrphanView,
    Ping,
    Pong,
    SiteList,
    SiteView,
    SliverList,
    SliverRow,
)
from slices.protocol.relay import ExecInput, ExecOutput, ExecResize, ExecResult, ExecSliver, LogChunk, NodeExec, NodeLogs, SliverLogs
from slices.protocol.slices import (
    CreateSlice,
    Deleted,
    DeleteSlice,
    Event,
    ListSlices,
    Place,
    PlanRow,
    PlanSlice,
    PlanView,
    Progress,
    Released,
    Renewed,
    RenewSlice,
    ShowSlice,
    SliceList,
    SliceSummary,
    SliceView,
    SliverView,
    WaitProgress,
    WaitSlice,
)

_LAZY: dict[str, str] = {
    "AcceptKey": "admin",
    "AddUser": "admin",
    "AuditEntry": "admin",
    "AuditList": "admin",
    "Beat": "agents",
    "CodeAck": "code",
    "CodeChunk": "code",
    "CodeState": "code",
    "Desired": "agents",
    "FetchCode": "code",
    "Goodbye": "agents",
    "Heartbeat": "agents",
    "KeyChanged": "admin",
    "KeyList": "admin",
    "KeyView": "admin",
    "ListAudit": "admin",
    "ListKeys": "admin",
    "ListPolicies": "admin",
    "ListUsers": "admin",
    "MakeToken": "admin",
    "MigrateSlice": "moves",
    "MoveView": "moves",
    "MovesBegun": "moves",
    "Peer": "agents",
    "PeerChange": "agents",
    "PolicyList": "admin",
    "Pulse": "agents",
    "PushCode": "code",
    "Register": "agents",
    "RejectKey": "admin",
    "RemoveSite": "admin",
    "RemoveUser": "admin",
    "Report": "agents",
    "RevokeKey": "admin",
    "SendCode": "code",
    "SetSite": "admin",
    "SitePolicy": "admin",
    "Token": "admin",
    "TrustKeys": "admin",
    "UploadCode": "code",
    "UserList": "admin",
    "UserView": "admin",
}


def __getattr__(name: str) -> Any:
    """A name of a module not loaded yet: that module, loaded now (PEP 562)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def load_all() -> None:
    """Every message type registered (``REGISTRY``), whatever was used so far (a topic
    already loaded costs a look in ``sys.modules``)."""
    for module in sorted(set(_LAZY.values())):
        importlib.import_module(f"{__name__}.{module}")


__all__ = [
    "PROTOCOL_MAJOR",
    "PROTOCOL_MINOR",
    "PROTOCOL_VERSION",
    "REGISTRY",
    "ROLES",
    "AcceptKey",
    "AddUser",
    "AuditEntry",
    "AuditList",
    "Beat",
    "CodeAck",
    "CodeChunk",
    "CodeState",
    "CreateSlice",
    "DeleteSlice",
    "Deleted",
    "Desired",
    "Error",
    "Event",
    "ExecInput",
    "ExecOutput",
    "ExecResize",
    "ExecResult",
    "ExecSliver",
    "FetchCode",
    "Goodbye",
    "Heartbeat",
    "KeyChanged",
    "KeyList",
    "KeyView",
    "ListAudit",
    "ListKeys",
    "ListNodes",
    "ListPolicies",
    "ListSites",
    "ListSlices",
    "ListSlivers",
    "ListUsers",
    "LogChunk",
    "MakeToken",
    "Message",
    "MigrateSlice",
    "MoveView",
    "MovesBegun",
    "NodeAdmin",
    "NodeExec",
    "NodeList",
    "NodeLogs",
    "NodeView",
    "Ok",
    "OrphanList",
    "OrphanView",
    "Orphans",
    "Peer",
    "PeerChange",
    "Ping",
    "Place",
    "PlanRow",
    "PlanSlice",
    "PlanView",
    "PolicyList",
    "Pong",
    "Progress",
    "Pulse",
    "PushCode",
    "Register",
    "RejectKey",
    "Released",
    "RemoveSite",
    "RemoveUser",
    "RenewSlice",
    "Renewed",
    "Report",
    "RevokeKey",
    "SendCode",
    "SetSite",
    "ShowSlice",
    "SiteList",
    "SitePolicy",
    "SiteView",
    "SliceList",
    "SliceSummary",
    "SliceView",
    "SliverList",
    "SliverLogs",
    "SliverRow",
    "SliverView",
    "Token",
    "TrustKeys",
    "UploadCode",
    "UserList",
    "UserView",
    "WaitProgress",
    "WaitSlice",
    "body_of",
    "build",
    "message",
    "result_of",
]
