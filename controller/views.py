"""What clients see: slices, slivers, nodes and sites as plain maps for replies."""

from __future__ import annotations

from typing import Any

from controller.cluster import Cluster, SliceRecord, SliverRecord
from controller.placement import Plan
from controller.registry import NodeRecord
from slices.geo import haversine_km
from slices.model import NodeInfo
from slices.spec import SliceSpec


def _where(info: NodeInfo) -> dict[str, Any]:
    """A node's place, as every view shows it."""
    loc = info.location
    return {"site": info.site, "city": loc.city, "country": loc.country, "region": loc.region, "lat": loc.lat, "lon": loc.lon}


def sliver_view(cluster: Cluster, sl: SliverRecord) -> dict[str, Any]:
    node = cluster.registry.nodes[sl.node]
    loc = node.info.location
    req = cluster.request_of(sl)
    km = haversine_km(req.lat, req.lon, loc.lat, loc.lon) if req.kind == "near" and req.lat is not None and req.lon is not None else None
    return {
        "id": sl.id,
        "node": sl.node,
        **_where(node.info),
        "backend": node.info.offers.get(sl.spec.isolation, "?"),
        "state": sl.state,
        "reason": sl.reason,
        "request": req.describe(),
        "km_to_point": round(km, 1) if km is not None else None,
        "usage": sl.usage,
    }


def slice_summary(sl: SliceRecord) -> dict[str, Any]:
    return {
        "name": sl.name,
        "owner": sl.owner,
        "description": sl.spec.description,
        "state": sl.state,
        "created": sl.created,
        "expires": sl.expires,
        "isolation": sl.spec.isolation,
        "image": sl.spec.image,
        "slivers_wanted": sl.spec.placement.count,
        "slivers_placed": len(sl.slivers),
    }


def slice_view(cluster: Cluster, sl: SliceRecord) -> dict[str, Any]:
    slivers = [sliver_view(cluster, cluster.slivers[s]) for s in sl.slivers]
    _nearest_peer(slivers)
    res = sl.spec.resources
    return {
        **slice_summary(sl),
        "resources": {"cpu": res.cpu, "memory": res.memory, "disk": res.disk, "bandwidth": res.bandwidth},
        "partial": sl.partial,
        "spec": sl.raw,
        "slivers": slivers,
    }


def _nearest_peer(slivers: list[dict[str, Any]]) -> None:
    for s in slivers:
        others = [haversine_km(s["lat"], s["lon"], o["lat"], o["lon"]) for o in slivers if o is not s]
        s["km_to_nearest_peer"] = round(min(others), 1) if others else None


def plan_view(cluster: Cluster, plan: Plan, spec: SliceSpec) -> dict[str, Any]:
    requests = spec.placement.requests()
    rows = []
    for a in plan.assignments:
        info = cluster.registry.nodes[a.node].info
        rows.append(
            {
                "node": a.node,
                **_where(info),
                "request": requests[a.request].describe(),
                "backend": info.offers.get(spec.isolation, "?"),
            }
        )
    _nearest_peer(rows)
    return {
        "name": spec.name,
        "dry_run": True,
        "wanted": plan.wanted,
        "placed": len(plan.assignments),
        "slivers": rows,
        "explanation": [r.text() for r in plan.reports],
    }


def node_view(cluster: Cluster, rec: NodeRecord) -> dict[str, Any]:
    info = rec.info
    cpu, memory, disk = cluster.allocated(rec)
    used = {"cpu": cpu, "memory": int(memory), "disk": int(disk)}
    return {
        "name": info.name,
        **_where(info),
        "state": rec.state,
        "backends": dict(info.offers),
        "images": list(info.images),
        "labels": dict(info.labels),
        "capacity": info.capacity.to_wire(),
        "reserve": info.reserve.to_wire(),
        "overbook": info.overbook,
        "allocated": used,
        "slivers": len(rec.slivers),
        "last_seen": rec.last_seen,
        "heartbeat_period": rec.period,
        "usage": rec.usage,
    }


def sites_view(cluster: Cluster) -> list[dict[str, Any]]:
    sites: dict[str, dict[str, Any]] = {}
    for rec in cluster.registry:
        info = rec.info
        place = _where(info)
        s = sites.setdefault(info.site, {"name": place.pop("site"), **place, "nodes": 0, "up": 0})
        s["nodes"] += 1
        s["up"] += rec.state == "up"
    return sorted(sites.values(), key=lambda s: s["name"])
