"""Orphans: slivers that nodes still run for an earlier cluster, after the controller's
database was lost and an operator began a new cluster. An operator adopts them (each slice's
slivers become a slice again, owned by the operator, where they already run: nothing moves
or restarts) or destroys them (the nodes remove them); until then they run untouched.
"""

from __future__ import annotations

from collections import defaultdict

from controller import peers
from controller.cluster import Cluster
from controller.records import SliceRecord, SliverRecord
from controller.store import SliceRow, SliverRow
from slices.errors import SliceMeshError
from slices.model import SliverSpec
from slices.spec import parse_spec

ADOPTED = "adopted after the controller's database was lost"


def adoptable(cluster: Cluster, node: str | None) -> dict[str, list[tuple[str, SliverSpec]]]:
    """Slice name -> [(node, sliver)] of every orphan (on ``node`` only, if given)."""
    out: dict[str, list[tuple[str, SliverSpec]]] = defaultdict(list)
    for rec in cluster.registry:
        if node is None or rec.name == node:
            for spec in rec.orphans.values():
                out[spec.slice].append((rec.name, spec))
    return dict(out)


def spec_doc(name: str, members: list[tuple[str, SliverSpec]]) -> dict[str, object]:
    """A slice spec that describes the orphans as they run (the original spec was lost)."""
    first = members[0][1]
    res = first.resources
    doc: dict[str, object] = {
        "name": name,
        "description": f"{ADOPTED}: {len(members)} slivers on {', '.join(sorted({n for n, _ in members}))}"[:1000],
        "isolation": first.isolation,
        "image": first.image,
        "resources": {"cpu": res.cpu, "memory": res.memory, "disk": res.disk, **({"bandwidth": f"{max(1, res.bandwidth // 1000)}Kbit"} if res.bandwidth else {})},
        "placement": {"count": len(members), "distinct": "none"},
    }
    if first.command is not None:
        doc["command"] = list(first.command)
    if first.env:
        doc["env"] = dict(first.env)
    return doc


def adopt(cluster: Cluster, name: str, members: list[tuple[str, SliverSpec]], owner: str, site: str | None, now: float) -> SliceRecord:
    """Make the orphans of slice ``name`` a slice of ``owner`` again, where they run."""
    if name in cluster.slices and cluster.slices[name].state != "expired":
        raise SliceMeshError(f"a slice named {name!r} exists already in this cluster: delete or rename it first, or destroy these orphans", code="exists")
    raw = {**spec_doc(name, members), "owner": owner}
    spec = parse_spec(raw)
    rec = SliceRecord(spec, raw, owner, now, now + spec.lifetime, None, site=site)
    rows = [SliverRow(s.id, name, 0, "pending", "adopted: waiting for the node agent", s.to_wire(), node, s.cpu, s.memory, s.disk) for node, s in members]
    generations = cluster.next_generations({node for node, _ in members})
    with cluster.store.transaction():
        old = cluster.slices.get(name)
        if old is not None:
            cluster.store.delete_slice(old.name)
        cluster.store.insert_slice(SliceRow(name, owner, raw, rec.state, rec.created, rec.expires, None, site), rows)
        cluster.store.gave_generations(generations.values())
    if name in cluster.slices:
        del cluster.slices[name]
    for node, s in members:
        sliver = SliverRecord(s, node, 0, "pending", "adopted: waiting for the node agent")
        cluster.slivers[s.id] = sliver
        rec.slivers.append(s.id)
        rec.counted(None, sliver.state)
        holder = cluster.registry.nodes[node]
        holder.slivers.add(s.id)
        holder.orphans.pop(s.id, None)
        cluster.charge(s, node, +1)
    cluster.apply_generations(generations)
    cluster.slices[name] = rec
    peers.forget(cluster, name)  # a slice of that name before: its addresses are not these
    return rec
