"""The rows of the biggest views (``nodes``, ``show``): their fields, and their wire form
packed from parts that are kept.

Most of a ``nodes`` row is its node's facts (place, offers, images, labels, capacity), and a
third of a ``show`` row is its node's place. They change only when the node registers with
new facts, and a ``NodeInfo`` is then replaced, never changed in place. So those parts are
packed once per info object and kept on the node's record (``NodeRecord.wire_of``: the
place; ``NodeRecord.facts_of``: the place and the facts), and a
``nodes`` row is kept whole until a field it shows is set (``NodeRecord.row_of``), and a
``show`` row while its fields are the same (``SliverRecord.row_of``), with its place and the fields that follow
from its node, spec and request kept apart (``SliverRecord.kept_of``); a view packs only the fields that changed
(state, allocation, last heartbeat, usage; a sliver's state, history and distances) and
joins the bytes under one map header. Building and packing each row as a record was ~12 µs
a row here, 120 ms for 10,000 nodes, all of it on the controller's one loop; joined from
kept parts it is about a third of that.

A row so packed is the same map a record's packing gives, entry for entry
(``tests/integration/test_rows.py`` decodes both): a decoder cannot tell them apart. The record
forms (``node_view``, ``sliver_view``) stay for replies of one row, built from the same
field functions, so there is one definition of what a row says.

A client that asks for rows as arrays (protocol 2.7, ``rows="arrays"``) gets each row as the
array of the same values, in the order of the same parts, and the field names once in the
reply's ``columns`` (``NODE_COLUMNS``, ``SLIVER_COLUMNS``); the records inside a row
(resources, usage, history) are arrays of their fields too. Half the bytes, and a third of the
client's unpacking.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from operator import attrgetter
from typing import TYPE_CHECKING, Any

import msgpack

from slices.geo import haversine_km
from slices.model import NodeInfo, Resources, Usage
from slices.protocol import Event, NodeView, SliverView
from slices.wire import Columns, fields_of, packable, row_packable

if TYPE_CHECKING:
    from controller.cluster import Cluster
    from controller.records import SliverRecord
    from controller.registry import NodeRecord

_HEADERS = msgpack.Packer(use_bin_type=True)
# One packer each, made once: ``msgpack.packb`` makes a packer at every call, a third of
# packing a row's few changing fields. The loop is the only caller (one thread).
_MAPS = msgpack.Packer(use_bin_type=True, default=packable)
_ROWS = msgpack.Packer(use_bin_type=True, default=row_packable)
# A record's fields in order, as a tuple (which packs as the array ``row_packable`` makes of it):
# one C call, where the packer's hook was a Python call per record and a third of making a row.
_RESOURCES = attrgetter(*fields_of(Resources))
_USAGE = attrgetter(*fields_of(Usage))
_EVENT = attrgetter(*fields_of(Event))


def _headless(packed: bytes, n: int) -> bytes:
    """A packed map or array of ``n`` items without its header (fix, 16- or 32-bit count)."""
    return packed[1 if n < 16 else 3 if n < 65536 else 5 :]


def entries(fields: dict[str, Any]) -> bytes:
    """A map's entries packed, without the map's header (joined under another by ``joined``)."""
    return _headless(_MAPS.pack(fields), len(fields))


def joined(count: int, *parts: bytes) -> bytes:
    """One packed map of ``count`` entries from parts made by ``entries`` (keys not repeated)."""
    header: bytes = _HEADERS.pack_map_header(count)
    return header + b"".join(parts)


def values(fields: dict[str, Any]) -> bytes:
    """A map's values packed as a row's (records as arrays: ``row_packable``), without the
    array's header (joined under another by ``row``)."""
    return _headless(_ROWS.pack(list(fields.values())), len(fields))


def row(count: int, *parts: bytes) -> bytes:
    """One packed array of ``count`` values from parts made by ``values``."""
    header: bytes = _HEADERS.pack_array_header(count)
    return header + b"".join(parts)


def place_fields(info: NodeInfo) -> dict[str, Any]:
    """A node's place, as every view shows it (``Place``'s fields)."""
    loc = info.location
    return {"site": info.site, "city": loc.city, "country": loc.country, "region": loc.region, "lat": loc.lat, "lon": loc.lon}


def fact_fields(info: NodeInfo) -> dict[str, Any]:
    """What a ``nodes`` row says of a node from its registration alone."""
    return {
        "name": info.name,
        "backends": dict(info.offers),
        "images": list(info.images),
        "labels": dict(info.labels),
        "facts": dict(info.facts),
        "capacity": info.capacity,
        "reserve": info.reserve,
        "overbook": info.overbook,
        "placeable": info.placeable,
    }


PLACE = ("site", "city", "country", "region", "lat", "lon")  # place_fields's keys, in order
FACTS = ("name", "backends", "images", "labels", "facts", "capacity", "reserve", "overbook", "placeable")  # fact_fields's
NODE_STATE = ("state", "admin", "allocated", "slivers", "orphans", "last_seen", "heartbeat_period", "usage")  # node_state_fields's
SLIVER_KEPT = ("node", "id", "backend", "request", "km_to_point")  # sliver_kept_fields's: from its node, spec and request
SLIVER_STATE = ("state", "reason", "km_to_nearest_peer", "usage", "restarts", "moves", "address", "code", "history")  # sliver_state_fields's
SLIVER = (*SLIVER_KEPT, *SLIVER_STATE)  # sliver_fields's

#: A ``nodes`` reply's columns when its rows are arrays: the parts' keys, in their order.
NODE_COLUMNS: Columns = {
    "nodes": [*PLACE, *FACTS, *NODE_STATE],
    **{f"nodes.{name}": fields_of(Resources) for name in ("capacity", "reserve", "placeable", "allocated")},
    "nodes.usage": fields_of(Usage),
}
TOP = ("id", "slice", "node", "state", "reason", "cpu", "memory", "usage", "address")  # top_fields's keys, in order
#: A ``top`` (``list_slivers``) reply's columns when its rows are arrays.
TOP_COLUMNS: Columns = {"slivers": list(TOP), "slivers.usage": fields_of(Usage)}
#: A ``show`` reply's columns when its rows are arrays.
SLIVER_COLUMNS: Columns = {"slivers": [*PLACE, *SLIVER], "slivers.usage": fields_of(Usage), "slivers.history": fields_of(Event)}


def _place(rec: NodeRecord, arrays: bool = False) -> bytes:
    """The place entries (``arrays``: values) of ``rec``'s info, packed once per info object."""
    kept = rec.wire_of
    if kept is None or kept[0] is not rec.info:
        fields = place_fields(rec.info)
        kept = rec.wire_of = (rec.info, entries(fields), values(fields))
    return kept[2] if arrays else kept[1]


def _after_place(kept: list[Any], rec: NodeRecord, arrays: bool, fields: Callable[[], dict[str, Any]]) -> bytes:
    """A kept part (``kept``: [what it is made from, as entries, as values]) in the form
    asked: ``rec``'s place and then ``fields()``, packed the first time that form is asked for
    (a ``show`` asks for arrays only: packing both forms was a quarter of its first time)."""
    form = 2 if arrays else 1
    part: bytes | None = kept[form]
    if part is None:
        part = kept[form] = _place(rec, arrays) + (values(fields()) if arrays else entries(fields()))
    return part


def _place_and_facts(rec: NodeRecord, arrays: bool = False) -> bytes:
    """The place and fact entries (``arrays``: values) of ``rec``'s info, packed once per info
    object: a ``nodes`` row made again (a heartbeat changed its last-seen time and usage)
    packs only its changing fields. Packing the facts each time (offers, labels, three
    resource vectors) was two thirds of making a row: 27-33 us a row, 0.3 s for 10,000."""
    kept = rec.facts_of
    if kept is None or kept[0] is not rec.info:
        kept = rec.facts_of = [rec.info, None, None]
    return _after_place(kept, rec, arrays, lambda: fact_fields(rec.info))


def node_state_values(cluster: Cluster, rec: NodeRecord) -> tuple[Any, ...]:
    """What a ``nodes`` row says of a node that changes while it runs, in ``NODE_STATE``'s
    order: from the record's fields in ``registry.SHOWN`` and its counts of slivers and
    orphans alone, which is what ``node_row`` watches to keep the row."""
    # last_seen: a restart's grace dates it ahead (registry.grace)
    return (rec.state, rec.admin, rec.used, len(rec.slivers), len(rec.orphans), min(rec.last_seen, cluster.clock()), rec.period, rec.usage)


def node_state_fields(cluster: Cluster, rec: NodeRecord) -> dict[str, Any]:
    """``node_state_values`` by name."""
    return dict(zip(NODE_STATE, node_state_values(cluster, rec), strict=True))


def node_view(cluster: Cluster, rec: NodeRecord) -> NodeView:
    return NodeView(**place_fields(rec.info), **fact_fields(rec.info), **node_state_fields(cluster, rec))


def node_row(cluster: Cluster, rec: NodeRecord, arrays: bool = False) -> bytes:
    """``node_view`` packed (``arrays``: as a row of ``NODE_COLUMNS``). The row is kept on the
    record until a field it shows is set (``NodeRecord.__setattr__`` drops it) or its count of
    slivers or orphans changes: most rows between two listings (a node's heartbeat comes every
    few seconds at 10,000 nodes), and a listing then reads nothing else of the record. Looking
    at all the fields of every row to see which changed was a microsecond a row here, and
    three to four times that on a loaded controller (10,000 records read from memory: 15-30 ms
    a listing). A row that must be made again is joined from its place, its facts and those
    fields; one whose last-seen time is ahead of the clock (a restart's grace) shows the
    clock, and is made again at every listing until the clock passes it."""
    slivers, orphans = len(rec.slivers), len(rec.orphans)
    kept = rec.row_of
    if kept is not None and kept[0] == slivers and kept[1] == orphans and kept[2] is arrays:
        return kept[3]
    now = node_state_values(cluster, rec)
    count = len(PLACE) + len(FACTS) + len(now)
    if arrays:
        made = row(count, _place_and_facts(rec, True), node_state_row(now))
    else:
        made = joined(count, _place_and_facts(rec), entries(dict(zip(NODE_STATE, now, strict=True))))
    rec.row_of = (slivers, orphans, arrays, made) if now[5] == rec.last_seen else None
    return made


def node_state_row(now: tuple[Any, ...]) -> bytes:
    """``node_state_values`` packed as a row's values, as ``values`` packs them by name, with
    its records as tuples (no map made first, no hook called): a row made again took 3-4 us here
    for a new last-seen time, 6 for new usage, two thirds of it in packing."""
    state, admin, allocated, slivers, orphans, last_seen, period, usage = now
    return _headless(_ROWS.pack((state, admin, _RESOURCES(allocated), slivers, orphans, last_seen, period, None if usage is None else _USAGE(usage))), len(now))


def km_rounded(value: float | None) -> float | None:
    return round(value, 1) if value is not None else None


def sliver_kept_fields(cluster: Cluster, sl: SliverRecord) -> dict[str, Any]:
    """What a ``show`` row says of a sliver from its node's info, its spec and its place
    request alone (packed once while those are the same: ``_sliver_kept``)."""
    info = cluster.registry.nodes[sl.node].info
    req = cluster.request_of(sl)
    km = haversine_km(req.lat, req.lon, info.location.lat, info.location.lon) if req.kind == "near" and req.lat is not None and req.lon is not None else None
    return {"node": sl.node, "id": sl.spec.id, "backend": info.offers.get(sl.spec.isolation, "?"), "request": req.describe(), "km_to_point": km_rounded(km)}


def sliver_state_fields(sl: SliverRecord, nearest: float | None, history: list[Event] | None = None) -> dict[str, Any]:
    """What a ``show`` row says of a sliver that changes while it runs."""
    return {
        "state": sl.state,
        "reason": sl.reason,
        "km_to_nearest_peer": km_rounded(nearest),
        "usage": sl.usage,
        "restarts": sl.restarts,
        "moves": sl.moves,
        "address": sl.address,
        "code": sl.code_note,
        "history": history or [],
    }


def sliver_fields(cluster: Cluster, sl: SliverRecord, nearest: float | None, history: list[Event] | None = None) -> dict[str, Any]:
    """What a ``show`` row says of a sliver, besides its node's place."""
    return {**sliver_kept_fields(cluster, sl), **sliver_state_fields(sl, nearest, history)}


def sliver_view(cluster: Cluster, sl: SliverRecord, nearest: float | None, history: list[Event] | None = None) -> SliverView:
    return SliverView(**place_fields(cluster.registry.nodes[sl.node].info), **sliver_fields(cluster, sl, nearest, history))


def _sliver_kept(cluster: Cluster, sl: SliverRecord, rec: NodeRecord, arrays: bool) -> bytes:
    """A sliver's place and kept fields, as entries (``arrays``: values), packed once while
    its node's info, its spec and its request are the same objects: a row made again (its
    state or usage changed) packs only ``sliver_state_fields``. A ``show`` of 10,000 slivers
    whose states had all changed (the first after a big slice started): 69 -> 52 ms here
    (23-25 ms with every row kept)."""
    key = (rec.info, sl.spec, sl.request)
    kept = sl.kept_of
    if kept is None or kept[0] != key:
        kept = sl.kept_of = [key, None, None]
    return _after_place(kept, rec, arrays, lambda: sliver_kept_fields(cluster, sl))


def prepared(cluster: Cluster, slivers: list[str], chunk: int = 250) -> Generator[None, None, None]:
    """The kept part of each of ``slivers``' ``show`` rows (as arrays), packed ahead in steps
    of ``chunk``: for a slice just created without its rows (``brief``, as ``create --wait``
    asks, which ends with a ``show``), so that its first ``show`` packs only the fields that
    change. That part was half of a big slice's first ``show`` (10,000 slivers: 73 -> 44
    ms here), the one that comes as the slice settles, while the loop still folds in its
    10,000 reports."""
    nodes, live = cluster.registry.nodes, cluster.slivers
    for i, sid in enumerate(slivers, 1):
        sl = live.get(sid)
        rec = nodes.get(sl.node) if sl is not None else None
        if sl is not None and rec is not None:
            _sliver_kept(cluster, sl, rec, True)
        if i % chunk == 0:
            yield


def sliver_row(cluster: Cluster, sl: SliverRecord, nearest: float | None, history: list[Event] | None = None, arrays: bool = False, rec: NodeRecord | None = None) -> bytes:
    """``sliver_view`` packed (``arrays``: as a row of ``SLIVER_COLUMNS``) from its kept
    parts and its changing fields. The row is kept on the record while everything it is made
    from is the same (most rows of a big slice shown again: a running sliver's state and
    place do not change, and its usage comes every few heartbeats); else it is joined again.
    ``rec``: its node's record, if the caller has it."""
    if rec is None:
        rec = cluster.registry.nodes[sl.node]
    key = (rec.info, arrays, sl.spec, sl.request, sl.state, sl.reason, sl.usage, sl.restarts, sl.moves, sl.address, sl.code_note, nearest, tuple(history) if history else ())
    kept = sl.row_of
    if kept is not None and kept[0] == key:
        return kept[1]
    count = len(PLACE) + len(SLIVER)
    if arrays:
        made = row(count, _sliver_kept(cluster, sl, rec, True), sliver_state_row(sl, nearest, history))
    else:
        made = joined(count, _sliver_kept(cluster, sl, rec, False), entries(sliver_state_fields(sl, nearest, history)))
    sl.row_of = (key, made)
    return made


def sliver_state_row(sl: SliverRecord, nearest: float | None, history: list[Event] | None = None) -> bytes:
    """``sliver_state_fields`` packed as a row's values (records as tuples: ``node_state_row``)."""
    usage = sl.usage
    fields = (sl.state, sl.reason, km_rounded(nearest), None if usage is None else _USAGE(usage), sl.restarts, sl.moves, sl.address, sl.code_note, [_EVENT(e) for e in history] if history else [])
    return _headless(_ROWS.pack(fields), len(SLIVER_STATE))


def top_fields(sl: SliverRecord) -> dict[str, Any]:
    """A row of ``top`` (every sliver the caller may see): ``SliverRow``'s fields, as a map a
    reply's ``Packed`` rows pack without a record made first."""
    spec = sl.spec
    return {"id": spec.id, "slice": spec.slice, "node": sl.node, "state": sl.state, "reason": sl.reason, "cpu": spec.cpu, "memory": spec.memory, "usage": sl.usage, "address": sl.address}


def top_row(sl: SliverRecord) -> bytes:
    """``top_fields`` packed as a row of ``TOP_COLUMNS``."""
    fields = top_fields(sl)
    return row(len(fields), values(fields))

