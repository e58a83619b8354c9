"""Human-readable tables for the CLI.

Cells pass ``printable`` so that a control character another party put in a name, a city or a
reason shows as an escape and cannot break a row or its alignment; the CLI's output gate
(slices/terminal.py) covers everything else printed.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

from slices.terminal import find_unprintable, printable
from slices.units import format_bandwidth, format_bytes, format_duration


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Columns padded to their widest cell; a cell's control characters shown as escapes.

    The cells are searched for them all at once, and escaped one by one only if there is one
    (10,000 nodes' rows were 100,000 regex substitutions, a quarter of ``slicemesh nodes``)."""
    cells = [[str(h) for h in headers]] + [["-" if v is None or v == "" else str(v) for v in row] for row in rows]
    if find_unprintable("".join(map("".join, cells))) is not None:
        cells = [[printable(c) for c in r] for r in cells]
    for r in cells:
        if len(r) != len(headers):
            raise ValueError(f"a row of {len(r)} cells under {len(headers)} headers")
    widths = [max(map(len, column)) for column in zip(*cells, strict=False)]  # every row's length is checked above
    line = "  ".join(f"{{:<{w}}}" for w in widths).format
    return "\n".join([line(*r).rstrip() for r in cells])


LONG_LIST = 100  # a list longer than this is printed one item a line by json_text


def json_text(doc: Any) -> str:
    """``--json`` output: indented for reading (keys sorted); the items of a long list compact,
    one a line. The indented form is written by json's Python encoder, the compact one by its C
    encoder: ``slicemesh nodes --json`` of 10,000 nodes spent 1.9 s in the first, 0.7 s so."""
    return _json_at(doc, "")


def _json_at(doc: Any, pad: str) -> str:
    if isinstance(doc, (list, tuple)) and len(doc) > LONG_LIST:
        return "[\n" + ",\n".join(pad + "  " + json.dumps(v, sort_keys=True, default=str) for v in doc) + "\n" + pad + "]"
    if isinstance(doc, dict) and all(type(k) is str for k in doc) and any(isinstance(v, (list, tuple)) and len(v) > LONG_LIST for v in doc.values()):
        return "{\n" + ",\n".join(f"{pad}  {json.dumps(k)}: {_json_at(doc[k], pad + '  ')}" for k in sorted(doc)) + "\n" + pad + "}"
    return json.dumps(doc, indent=2, sort_keys=True, default=str).replace("\n", "\n" + pad)


def when(ts: float | None) -> str:
    if ts is None:
        return "-"
    left = ts - time.time()
    stamp = time.strftime("%Y-%m-%d %H:%M", time.gmtime(ts))
    return f"{stamp}Z ({'in ' + format_duration(left) if left >= 0 else format_duration(-left) + ' ago'})"


def _km(v: float | None) -> str:
    return f"{v:,.0f} km" if v is not None else "-"


def slice_text(s: dict[str, Any]) -> str:
    res = s.get("resources") or {}
    head = [
        f"slice     {s['name']}  ({s['state']})",
        f"owner     {s.get('owner') or '-'}",
        f"about     {printable(str(s.get('description', '')))}",
        f"expires   {when(s.get('expires'))}",
        f"kind      {s.get('isolation')} / image {s.get('image')}",
        f"each      cpu {res.get('cpu', 0):g}, memory {format_bytes(res.get('memory') or 0)}"
        + (f", disk {format_bytes(res['disk'])}" if res.get("disk") else "")
        + (f", bandwidth {format_bandwidth(res['bandwidth'])}" if res.get("bandwidth") else ""),
        f"slivers   {s.get('slivers_placed')} of {s.get('slivers_wanted')}" + (" (partial: min_count allowed it)" if s.get("partial") else ""),
    ]
    if s.get("problem"):
        head.append(f"problem   {printable(str(s['problem']))}")
    head.append("")
    out = "\n".join(head) + placement_table(s["slivers"], show_state=True)
    code = [[v["node"], v["id"], printable(str(v["code"]))] for v in s["slivers"] if v.get("code")]
    if code:
        out += "\n\ncode (/code in each sliver: how it reached the node)\n" + table(["NODE", "SLIVER", "CODE"], code[:50])
    events = sorted([*s.get("timeline", []), *(e for v in s["slivers"] for e in v.get("history", []))], key=lambda e: e["ts"])
    if events:
        rows = [[time.strftime("%H:%M:%S", time.gmtime(e["ts"])), e["event"], e.get("sliver"), e.get("node"), e.get("detail")] for e in events[-20:]]
        out += "\n\ntimeline (newest last" + (f"; {len(events) - 20} earlier in --json" if len(events) > 20 else "") + ")\n" + table(["WHEN (UTC)", "EVENT", "SLIVER", "NODE", "DETAIL"], rows)
    return out


#: Released slivers a text ``delete`` names; ``--json`` lists them all.
RELEASED_SHOWN = 20


def deleted_text(r: dict[str, Any], *, removed: bool) -> str:
    """``delete``'s answer: the slice, then each sliver it released and the node it was on."""
    done = ", and removed from every node" if removed else ""
    lines = [f"deleted slice {r['name']} ({r['slivers']} slivers released{done})"]
    released = r.get("released") or []
    lines += [f"  {v['id']} on {v['node']}" for v in released[:RELEASED_SHOWN]]
    if len(released) > RELEASED_SHOWN:
        lines.append(f"  ... and {len(released) - RELEASED_SHOWN} more (--json lists them all)")
    return "\n".join(lines)


def placement_table(slivers: Sequence[dict[str, Any]], *, show_state: bool) -> str:
    headers = ["NODE", "SITE", "CITY", "COUNTRY", "REGION", "ASKED FOR", "DISTANCE", "NEAREST PEER", "BACKEND"]
    if show_state:
        headers += ["STATE", "ADDRESS", "CPU", "MEM", "RESTARTS", "MOVES", "REASON"]
    rows = []
    for v in slivers:
        row = [v["node"], v["site"], v["city"], v["country"], v["region"], v.get("request"), _km(v.get("km_to_point")), _km(v.get("km_to_nearest_peer")), v.get("backend")]
        if show_state:
            u = v.get("usage") or {}
            row += [v["state"], v.get("address") or "-", f"{u['cpu_cores']:.2f}" if u else "-", format_bytes(u["memory"]) if u else "-", v.get("restarts", 0), v.get("moves", 0), v.get("reason")]
        rows.append(row)
    return table(headers, rows)


def slices_text(slices: Sequence[dict[str, Any]]) -> str:
    if not slices:
        return "no slices"
    return table(
        ["NAME", "OWNER", "STATE", "SLIVERS", "KIND", "EXPIRES"],
        [[s["name"], s.get("owner"), s["state"], f"{s['slivers_placed']}/{s['slivers_wanted']}", s["isolation"], when(s["expires"])] for s in slices],
    )


def nodes_text(nodes: Sequence[dict[str, Any]]) -> str:
    """CPU and MEMORY read ``allocated/placeable (capacity-reserve)``, with ``xN`` when the node
    overbooks: placeable is (capacity - reserve) x overbook, so a refusal for lack of room can be
    checked by eye."""
    if not nodes:
        return "no nodes"
    rows = []
    cores, sizes = functools.cache(lambda v: f"{v:g}"), functools.cache(lambda v: format_bytes(int(v)) if v else "0")  # nodes alike share their figures
    for n in nodes:
        backends = ",".join(f"{k}={v}" for k, v in sorted(n["backends"].items()))
        slivers = f"{n['slivers']}" + (f" +{n['orphans']} orphans" if n.get("orphans") else "")
        cpu = _room(n, "cpu", cores)
        mem = _room(n, "memory", sizes)
        state = n["state"] + (f", {n['admin']}" if n.get("admin", "active") != "active" else "")  # cordoned or draining: no new slivers
        rows.append([n["name"], n["site"], n["city"], n["country"], n["region"], state, backends, cpu, mem, slivers])
    headers = ["NODE", "SITE", "CITY", "COUNTRY", "REGION", "STATE", "BACKENDS", "CPU ALLOC/PLACEABLE (CAP-RESERVE)", "MEMORY ALLOC/PLACEABLE (CAP-RESERVE)", "SLIVERS"]
    out = table(headers, rows)
    facts = [f"{n['name']}: {facts_text(n['facts'])}" for n in nodes if n.get("facts")]
    labels = [f"{n['name']}: {facts_text(n['labels'])}" for n in nodes if n.get("labels")]
    out += "\n\nfacts (what each node's backends found at start):\n  " + "\n  ".join(facts) if facts else ""
    return out + ("\n\nlabels (the operator's, and the wide-area path of a simulated machine):\n  " + "\n  ".join(labels) if labels else "")


def _room(node: dict[str, Any], key: str, shown: Callable[[float], str]) -> str:
    """``allocated/placeable (capacity-reserve)`` of one resource, ``xN`` when overbooked."""
    cap = node["capacity"][key]
    reserve = (node.get("reserve") or {}).get(key, 0)
    room = (node.get("placeable") or node["capacity"])[key]
    overbook = float(node.get("overbook", 1.0))
    return f"{shown(node['allocated'][key])}/{shown(room)} ({shown(cap)}-{shown(reserve)})" + (f"x{overbook:g}" if overbook != 1.0 else "")


def facts_text(facts: dict[str, str]) -> str:
    """``key value; ...`` in key order; byte counts under a ``memory`` key shown as sizes."""
    shown = []
    for key, value in sorted(facts.items()):
        if key.endswith("memory") and value.isdigit():
            value = format_bytes(int(value))
        shown.append(f"{key} {printable(value)}")
    return "; ".join(shown)


def top_text(nodes: Sequence[dict[str, Any]], slivers: Sequence[dict[str, Any]]) -> str:
    """A CoMon/slicestat-style view: busiest nodes, then every sliver's measured use."""
    by_node: dict[str, list[dict[str, Any]]] = {}
    for v in slivers:
        by_node.setdefault(v["node"], []).append(v)
    rows = []
    for n in sorted(nodes, key=lambda n: (-(n.get("usage") or {}).get("cpu_cores", 0), n["name"])):
        u = n.get("usage") or {}
        if not by_node.get(n["name"]) and n["state"] == "up":
            continue
        rows.append([n["name"], n["site"], n["state"], ",".join(sorted(set(n["backends"].values()))), len(by_node.get(n["name"], [])), f"{u.get('cpu_cores', 0):.2f}/{n['capacity']['cpu']:g}", f"{format_bytes(u.get('memory', 0))}/{format_bytes(n['capacity']['memory'])}"])
    up = sum(1 for n in nodes if n["state"] == "up")
    out = [f"{len(nodes)} nodes ({up} up, {len(nodes) - up} down), {len(slivers)} slivers", ""]
    out.append(table(["NODE", "SITE", "STATE", "BACKEND", "SLIVERS", "CPU CORES", "MEMORY"], rows) if rows else "(no node holds a sliver)")
    srows = []
    for v in slivers:
        u = v.get("usage") or {}
        srows.append(
            [
                v["slice"],
                v["id"],
                v["node"],
                v.get("address") or "-",
                v["state"] if v["state"] == "running" else f"{v['state']} ({v.get('reason') or '-'})",
                f"{u.get('cpu_cores', 0):.2f}/{v['cpu']:g}",
                f"{u.get('cpu_seconds', 0):.1f}",
                f"{format_bytes(u.get('memory', 0))}/{format_bytes(v['memory'])}",
                format_bytes(u.get("memory_peak", 0)),
                u.get("oom_kills", 0),
                u.get("pids", 0),
                f"{format_bytes(u.get('net_rx', 0))}/{format_bytes(u.get('net_tx', 0))}",
            ]
        )
    if srows:
        out += ["", table(["SLICE", "SLIVER", "NODE", "ADDRESS", "STATE", "CPU", "CPU-S", "MEMORY", "PEAK", "OOM", "PIDS", "NET RX/TX"], srows)]
    return "\n".join(out)


def sites_text(sites: Sequence[dict[str, Any]]) -> str:
    if not sites:
        return "no sites"
    return table(
        ["SITE", "CITY", "COUNTRY", "REGION", "LAT", "LON", "NODES", "UP"],
        [[s["name"], s["city"], s["country"], s["region"], f"{s['lat']:.2f}", f"{s['lon']:.2f}", s["nodes"], s["up"]] for s in sites],
    )
