"""Slices: create (or plan), list, show, delete, renew; and what a client sees of them.

The spec travels as the submitted document (a map) and is validated by the controller with
the same parser the CLI runs offline (``slices.spec``). Who owns a slice is never a field a
client sends: the controller sets it from the caller's authenticated key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from slices.model import NODE_NAME, SITE_NAME, SLICE_NAME, SLIVER_ID, Resources, Usage
from slices.protocol.base import Message, message
from slices.wire import Columns, fld

MAX_LIST = 100_000
#: How a big view's rows travel: "maps" (each row a map of its fields) or "arrays" (each row
#: the array of its values, the field names once in the reply's ``columns``: protocol 2.7).
Rows = Literal["maps", "arrays"]
MAX_LEASE_SECONDS = 10 * 365 * 86400


@dataclass(frozen=True, kw_only=True)
class SliceSummary:
    name: str = fld(pattern=SLICE_NAME)
    owner: str | None = fld(None, max_len=64)
    site: str | None = fld(None, pattern=SITE_NAME)
    description: str = fld("", kind="text", max_len=4096)
    state: str = fld(max_len=32)
    created: float = fld(lo=0)
    expires: float = fld(lo=0)
    isolation: str = fld(max_len=32)
    image: str = fld(max_len=64)
    slivers_wanted: int = fld(lo=0)
    slivers_placed: int = fld(lo=0)


@dataclass(frozen=True, kw_only=True)
class Place:
    """Where a node is, as every view shows it (flattened into the view's map)."""

    site: str = fld(pattern=SITE_NAME)
    city: str = fld(kind="text", max_len=128)
    country: str = fld(max_len=2)
    region: str = fld(max_len=32)
    lat: float = fld(lo=-90, hi=90)
    lon: float = fld(lo=-180, hi=180)


@dataclass(frozen=True, kw_only=True)
class Event:
    """One line of a slice's timeline: created, placed, started, exited, failed, moved, ..."""

    ts: float = fld(lo=0)
    event: str = fld(max_len=32)
    sliver: str | None = fld(None, pattern=SLIVER_ID)
    node: str | None = fld(None, pattern=NODE_NAME)
    detail: str = fld("", kind="text", max_len=512)


@dataclass(frozen=True, kw_only=True)
class SliverView(Place):
    node: str = fld(pattern=NODE_NAME)
    id: str = fld(pattern=SLIVER_ID)
    backend: str = fld("?", max_len=32)
    state: str = fld("pending", max_len=32)
    reason: str | None = fld(None, kind="text", max_len=512)
    request: str = fld("", kind="text", max_len=256)
    km_to_point: float | None = fld(None, lo=0)
    km_to_nearest_peer: float | None = fld(None, lo=0)
    usage: Usage | None = None
    restarts: int = fld(0, lo=0)
    moves: int = fld(0, lo=0)
    address: str | None = fld(None, max_len=64)  # on its node's sliver subnet, once its agent reported it
    code: str | None = fld(None, kind="text", max_len=256)  # how its slice's code reached its node
    history: list[Event] = fld(factory=list, max_items=1000)  # node, when, why: placed, moved, ...


@dataclass(frozen=True, kw_only=True)
class SliceView(SliceSummary):
    resources: Resources = fld(factory=Resources)
    partial: bool = False
    spec: dict[str, Any] = fld(factory=dict)
    slivers: list[SliverView] = fld(factory=list, max_items=MAX_LIST)
    timeline: list[Event] = fld(factory=list, max_items=10_000)  # the slice's own events, newest last
    problem: str | None = fld(None, kind="text", max_len=4096)  # why it is degraded, when it is
    columns: Columns | None = fld(None, max_items=256)  # rows sent as arrays: each record's fields, in order (protocol 2.7)


@dataclass(frozen=True, kw_only=True)
class PlanRow(Place):
    node: str = fld(pattern=NODE_NAME)
    request: str = fld("", kind="text", max_len=256)
    backend: str = fld("?", max_len=32)
    km_to_nearest_peer: float | None = fld(None, lo=0)


@dataclass(frozen=True, kw_only=True)
class PlanView:
    name: str = fld(pattern=SLICE_NAME)
    wanted: int = fld(lo=0)
    placed: int = fld(lo=0)
    slivers: list[PlanRow] = fld(factory=list, max_items=MAX_LIST)
    explanation: list[str] = fld(factory=list, kind="text", max_len=4096, max_items=10_000)
    dry_run: bool = True


@dataclass(frozen=True, kw_only=True)
class SliceList:
    slices: list[SliceSummary] = fld(factory=list, max_items=MAX_LIST)
    total: int = fld(0, lo=0)
    next: str | None = fld(None, pattern=SLICE_NAME)  # pass as ``after`` for the next page


@dataclass(frozen=True, kw_only=True)
class Released:
    """A sliver a delete released, and the node it was on."""

    id: str = fld(pattern=SLIVER_ID)
    node: str = fld(pattern=NODE_NAME)


@dataclass(frozen=True, kw_only=True)
class Deleted:
    name: str = fld(pattern=SLICE_NAME)
    slivers: int = fld(lo=0)  # how many were released
    released: list[Released] = fld(factory=list, max_items=MAX_LIST)  # which (protocol 2.5)


@dataclass(frozen=True, kw_only=True)
class Renewed:
    name: str = fld(pattern=SLICE_NAME)
    expires: float = fld(lo=0)
    capped: bool = False


@dataclass(frozen=True, kw_only=True)
class Progress:
    """Where a slice stands: what ``create --wait`` and ``show --watch`` print."""

    name: str = fld(pattern=SLICE_NAME)
    state: str = fld(max_len=32)  # a slice state, or "deleted" once every node removed it
    running: int = fld(0, lo=0)
    wanted: int = fld(0, lo=0)
    placed: int = fld(0, lo=0)
    settled: bool = False  # it stays so until something changes it
    version: int = fld(0, lo=0)  # grows with every change: pass it back as ``seen``
    timed_out: bool = False


@message
@dataclass(frozen=True)
class WaitSlice(Message):
    """Answered when the slice changes past ``seen`` (``until: change``), settles, or is gone
    from every node (``until: deleted``), or at ``timeout``: the controller tells, nobody
    polls. Meanwhile ``wait_progress`` notices carrying this request's id report progress."""

    TYPE = "wait_slice"
    REPLY = Progress
    name: str = fld(max_len=256)
    until: Literal["settled", "change", "deleted"] = fld("settled")
    seen: int = fld(0, lo=0)
    timeout: float = fld(60.0, lo=0.0, hi=3600.0)


@message
@dataclass(frozen=True)
class WaitProgress(Message):
    """Controller -> client, while a ``wait_slice`` waits: the slice moved."""

    TYPE = "wait_progress"
    REQUEST = False
    SENDER = "controller"
    request: str = fld(max_len=64)
    progress: Progress = fld()


@message
@dataclass(frozen=True)
class CreateSlice(Message):
    TYPE = "create_slice"
    REPLY = SliceView
    spec: dict[str, Any] = fld(factory=dict)
    #: The reply without its per-sliver rows and timeline (``create --wait`` shows the slice
    #: once it settles; 10,000 rows it would drop are not worth building). Since 2.1.
    brief: bool = False


@message
@dataclass(frozen=True)
class PlanSlice(Message):
    """A dry run: the placement the spec would get, or why it is impossible; changes nothing."""

    TYPE = "plan_slice"
    REPLY = PlanView
    spec: dict[str, Any] = fld(factory=dict)


@message
@dataclass(frozen=True)
class ListSlices(Message):
    TYPE = "list_slices"
    REPLY = SliceList
    limit: int | None = fld(None, lo=1, hi=MAX_LIST)
    after: str | None = fld(None, pattern=SLICE_NAME)


@message
@dataclass(frozen=True)
class ShowSlice(Message):
    TYPE = "show_slice"
    REPLY = SliceView
    name: str = fld(max_len=256)
    rows: Rows = fld("maps")  # "arrays": each sliver a row of the reply's columns (protocol 2.7)


@message
@dataclass(frozen=True)
class DeleteSlice(Message):
    TYPE = "delete_slice"
    REPLY = Deleted
    name: str = fld(max_len=256)


@message
@dataclass(frozen=True)
class RenewSlice(Message):
    TYPE = "renew_slice"
    REPLY = Renewed
    name: str = fld(max_len=256)
    seconds: int = fld(lo=-MAX_LEASE_SECONDS, hi=MAX_LEASE_SECONDS)
