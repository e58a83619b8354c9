"""The cluster as users see it: nodes, sites, every sliver's usage, and ``ping``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from slices.model import NODE_NAME, SLICE_NAME, SLIVER_ID, Resources, Usage
from slices.protocol.base import Message, message
from slices.protocol.slices import MAX_LIST, Place, Rows
from slices.wire import Columns, fld


@dataclass(frozen=True, kw_only=True)
class NodeView(Place):
    name: str = fld(pattern=NODE_NAME)
    state: str = fld("up", max_len=32)
    admin: str = fld("active", max_len=16)  # active | cordoned | draining
    backends: dict[str, str] = fld(factory=dict, max_len=32, max_items=8)
    images: list[str] = fld(factory=list, max_len=64, max_items=64)
    labels: dict[str, str] = fld(factory=dict, kind="text", max_len=256, max_items=64)
    facts: dict[str, str] = fld(factory=dict, kind="text", max_len=256, max_items=32)
    capacity: Resources = fld(factory=Resources)
    reserve: Resources = fld(factory=Resources)
    overbook: float = fld(1.0, lo=0)
    allocated: Resources = fld(factory=Resources)
    placeable: Resources = fld(factory=Resources)
    slivers: int = fld(0, lo=0)
    orphans: int = fld(0, lo=0)  # slivers it still runs for an earlier cluster (`slicemesh orphans`)
    last_seen: float = fld(0.0, lo=0)
    heartbeat_period: float = fld(1.0, lo=0)
    usage: Usage | None = None


@dataclass(frozen=True, kw_only=True)
class NodeList:
    nodes: list[NodeView] = fld(factory=list, max_items=MAX_LIST)
    total: int = fld(0, lo=0)
    next: str | None = fld(None, pattern=NODE_NAME)
    columns: Columns | None = fld(None, max_items=256)  # rows sent as arrays: each record's fields, in order (protocol 2.7)


@dataclass(frozen=True, kw_only=True)
class SiteView:
    name: str = fld(max_len=64)
    city: str = fld(kind="text", max_len=128)
    country: str = fld(max_len=2)
    region: str = fld(max_len=32)
    lat: float = fld(lo=-90, hi=90)
    lon: float = fld(lo=-180, hi=180)
    nodes: int = fld(0, lo=0)
    up: int = fld(0, lo=0)


@dataclass(frozen=True, kw_only=True)
class SiteList:
    sites: list[SiteView] = fld(factory=list, max_items=MAX_LIST)


@dataclass(frozen=True, kw_only=True)
class SliverRow:
    id: str = fld(pattern=SLIVER_ID)
    slice: str = fld(pattern=SLICE_NAME)
    node: str = fld(pattern=NODE_NAME)
    state: str = fld(max_len=32)
    reason: str | None = fld(None, kind="text", max_len=512)
    cpu: float = fld(0.0, lo=0)
    memory: int = fld(0, lo=0)
    usage: Usage | None = None
    address: str | None = fld(None, max_len=64)


@dataclass(frozen=True, kw_only=True)
class SliverList:
    slivers: list[SliverRow] = fld(factory=list, max_items=1_000_000)
    columns: Columns | None = fld(None, max_items=256)  # rows sent as arrays: each record's fields, in order (protocol 2.7)


@dataclass(frozen=True, kw_only=True)
class Pong:
    version: str = fld(max_len=32)
    protocol: str = fld(max_len=16)
    nodes: int = fld(0, lo=0)
    slices: int = fld(0, lo=0)
    up: int = fld(0, lo=0)  # nodes up (protocol 2.x controllers before it answer 0)
    principal: str | None = fld(None, max_len=128)
    role: str | None = fld(None, max_len=16)
    code_bytes_out: int = fld(0, lo=0)  # bytes of code bundles sent to nodes, pulled or pushed (protocol 2.2)
    code_peer_sends: int = fld(0, lo=0)  # bundles the controller had a peer agent send instead (protocol 2.3)
    # The controller's own figure of how long a user's request waited for the loop to read it
    # (controller/userwaits.py): the longest such wait and how many were over 50 ms, in the
    # last minute (protocol 2.4).
    user_wait_max_ms: float = fld(0.0, lo=0.0)
    user_waits_over_50ms: int = fld(0, lo=0)


@message
@dataclass(frozen=True)
class ListNodes(Message):
    TYPE = "list_nodes"
    REPLY = NodeList
    limit: int | None = fld(None, lo=1, hi=MAX_LIST)
    after: str | None = fld(None, pattern=NODE_NAME)
    rows: Rows = fld("maps")  # "arrays": each node a row of the reply's columns (protocol 2.7)


@message
@dataclass(frozen=True)
class ListSites(Message):
    TYPE = "list_sites"
    REPLY = SiteList


@message
@dataclass(frozen=True)
class ListSlivers(Message):
    """Every sliver the caller may see, with its node, state and latest usage (``top``)."""

    TYPE = "list_slivers"
    REPLY = SliverList
    rows: Rows = fld("maps")  # "arrays": each sliver a row of the reply's columns (protocol 2.7)


@message
@dataclass(frozen=True)
class Ping(Message):
    """Liveness, version and who the controller thinks the caller is."""

    TYPE = "ping"
    REPLY = Pong
    SENDER = "any"


@dataclass(frozen=True, kw_only=True)
class OrphanView:
    node: str = fld(pattern=NODE_NAME)
    id: str = fld(pattern=SLIVER_ID)
    slice: str = fld(pattern=SLICE_NAME)
    isolation: str = fld(max_len=16)


@dataclass(frozen=True, kw_only=True)
class OrphanList:
    orphans: list[OrphanView] = fld(factory=list, max_items=1_000_000)
    changed: int = fld(0, lo=0)  # how many were adopted or marked for destruction


@message
@dataclass(frozen=True)
class Orphans(Message):
    """Slivers nodes still run for an earlier cluster (the controller's database was lost):
    list them, adopt them into slices owned by the caller, or destroy them (admins)."""

    TYPE = "orphans"
    REPLY = OrphanList
    action: Literal["list", "adopt", "destroy"] = fld("list")
    node: str | None = fld(None, pattern=NODE_NAME)


@message
@dataclass(frozen=True)
class NodeAdmin(Message):
    """Operators: ``cordon`` (no new slivers), ``uncordon``, ``drain`` (no new slivers, and
    every sliver moved elsewhere, started there before it stops here), ``remove`` (only when
    the node holds nothing, unless ``force``)."""

    TYPE = "node_admin"
    REPLY = NodeView
    name: str = fld(pattern=NODE_NAME)
    action: Literal["cordon", "uncordon", "drain", "remove"] = fld()
    force: bool = False
