"""Every message type on the wire, grouped by topic; importing this package registers them all.

``base`` holds what every message shares (registry, ``Ok``/``Error``, the version); the
topic modules hold each request with the records its reply carries, so one verb is read in
one place. docs/protocol.md lists every type and error code (a test keeps it complete).
"""

from slices.protocol.agents import Beat, Desired, Heartbeat, Register, Report
from slices.protocol.base import PROTOCOL_MAJOR, PROTOCOL_MINOR, PROTOCOL_VERSION, REGISTRY, Error, Message, Ok, body_of, build, message, result_of
from slices.protocol.nodes import ListNodes, ListSites, ListSlivers, NodeList, NodeView, Ping, Pong, SiteList, SiteView, SliverList, SliverRow
from slices.protocol.relay import ExecOutput, ExecResult, ExecSliver, LogChunk, NodeExec, NodeLogs, SliverLogs
from slices.protocol.slices import (
    CreateSlice,
    Deleted,
    DeleteSlice,
    ListSlices,
    Place,
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

__all__ = [
    "PROTOCOL_MAJOR",
    "PROTOCOL_MINOR",
    "PROTOCOL_VERSION",
    "REGISTRY",
    "Beat",
    "CreateSlice",
    "DeleteSlice",
    "Deleted",
    "Desired",
    "Error",
    "ExecOutput",
    "ExecResult",
    "ExecSliver",
    "Heartbeat",
    "ListNodes",
    "ListSites",
    "ListSlices",
    "ListSlivers",
    "LogChunk",
    "Message",
    "NodeExec",
    "NodeList",
    "NodeLogs",
    "NodeView",
    "Ok",
    "Ping",
    "Place",
    "PlanRow",
    "PlanSlice",
    "PlanView",
    "Pong",
    "Register",
    "RenewSlice",
    "Renewed",
    "Report",
    "ShowSlice",
    "SiteList",
    "SiteView",
    "SliceList",
    "SliceSummary",
    "SliceView",
    "SliverList",
    "SliverLogs",
    "SliverRow",
    "SliverView",
    "body_of",
    "build",
    "message",
    "result_of",
]
