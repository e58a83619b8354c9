"""``slicemesh migrate``: move a slice's running slivers to other nodes, with their state.

VM slivers move live (the guest keeps running and resumes on the new node), container
slivers cold (stopped, their disk moved, started again: files survive, memory does not);
docs/migration.md. With ``--wait`` the command returns when every move ended, told by the
controller (waits on slice changes, no polling), and prints what each cost.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from slices import cliinput, render
from slices import protocol as proto  # the moves' messages load when first used
from slices.client import Client
from slices.errors import SliceMeshError
from slices.migration import MoveOptions
from slices.protocol import ShowSlice
from slices.wire import to_wire


def outcome(view: dict[str, Any], sliver: str, target: str, since: float) -> tuple[str, str] | None:
    """How the move of ``sliver`` to ``target`` begun at ``since`` ended, from a slice view:
    ("moved" | "failed", detail), or None while it goes on."""
    for v in view["slivers"]:
        if v["id"] != sliver:
            continue
        for e in reversed(v.get("history", [])):
            if e["ts"] < since - 1.0:
                break
            if e["event"] == "moved" and e.get("node") == target:
                return "moved", e.get("detail") or ""
            if e["event"] == "move failed":
                return "failed", e.get("detail") or ""
    return None


def cmd_migrate(a: argparse.Namespace, client: Callable[[argparse.Namespace], Client]) -> int:
    options = MoveOptions(auto_converge=a.auto_converge, xbzrle=a.xbzrle, downtime_ms=a.downtime_limit, timeout=a.move_timeout)
    with client(a) as c:
        started = time.time()
        begun = to_wire(c.call(proto.MigrateSlice(slice=a.slice, sliver=a.sliver, to=a.to, options=options)))
        moves = begun["moves"]
        if not a.wait:
            if a.json:
                print(render.json_text(begun))
            else:
                for m in moves:
                    print(f"moving sliver {m['sliver']} from {m['source']} to {m['target']} ({m['kind']}); `slicemesh show {a.slice}` follows it")
            return 0
        ended: dict[str, tuple[str, str]] = {}
        seen = c.wait(a.slice, "change", 0).version
        deadline = time.monotonic() + a.wait_timeout
        while True:
            view = to_wire(c.call(ShowSlice(name=a.slice, rows="arrays")))
            for m in moves:
                if m["sliver"] not in ended and (got := outcome(view, m["sliver"], m["target"], started)) is not None:
                    ended[m["sliver"]] = got
            left = deadline - time.monotonic()
            if len(ended) == len(moves) or left <= 0:
                break
            seen = c.wait(a.slice, "change", left, seen=seen).version  # told, not polled
    results = [{**m, "result": ended.get(m["sliver"], ("still moving", ""))[0], "detail": ended.get(m["sliver"], ("", ""))[1]} for m in moves]
    if a.json:
        print(render.json_text({"slice": a.slice, "moves": results}))
    else:
        for r in results:
            print(f"sliver {r['sliver']}: {r['source']} -> {r['target']} ({r['kind']}): {r['result']}" + (f"; {r['detail']}" if r["detail"] else ""))
    if any(r["result"] == "still moving" for r in results):
        raise SliceMeshError(f"moves still under way after {a.wait_timeout:g} s (`slicemesh show {a.slice}` follows them)", code="timeout")
    return 0 if all(r["result"] == "moved" for r in results) else 1


def add_parsers(sub: Any, common: argparse.ArgumentParser, client: Callable[[argparse.Namespace], Client]) -> None:
    mg = sub.add_parser(
        "migrate",
        parents=[common],
        help="move running slivers to other nodes (VMs live, containers cold)",
        usage="slicemesh migrate SLICE [SLIVER] (--to NODE | --auto) [options]",
        description=(
            "Move SLIVER (or every sliver of SLICE) to NODE, or where placement finds room under the slice's own constraints (--auto). "
            "VM slivers move live: the guest keeps running and resumes on the new node. Container slivers move cold: stopped, "
            "their disk sent, started again there (files survive, memory does not). Each keeps running where it is until it has "
            "arrived; a move that fails leaves it there."
        ),
    )
    mg.add_argument("slice", type=cliinput.slice_name)
    mg.add_argument("sliver", nargs="?", type=cliinput.sliver_id, default=None, help="the sliver to move (an id from `slicemesh show`; default: all)")
    where = mg.add_mutually_exclusive_group(required=True)
    where.add_argument("--to", type=cliinput.node_name, help="the node to move to")
    where.add_argument("--auto", action="store_true", help="let placement choose, under the slice's constraints")
    mg.add_argument("--auto-converge", action="store_true", help="VMs: slow the guest's vCPUs when it dirties memory faster than it moves")
    mg.add_argument("--xbzrle", action="store_true", help="VMs: send changed pages as compressed deltas")
    mg.add_argument("--downtime-limit", type=cliinput.whole(1, 60_000), default=300, metavar="MS", help="VMs: the pause QEMU may take to send the last pages (default 300)")
    mg.add_argument("--move-timeout", type=cliinput.seconds(1, 86_400), default=600.0, metavar="S", help="give up (and keep the sliver where it runs) after this (default 600)")
    mg.add_argument("--wait", action="store_true", help="return when every move ended, with what it cost")
    mg.add_argument("--wait-timeout", type=cliinput.seconds(1, 86_400), default=900.0, metavar="S", help="seconds --wait waits (default 900)")
    mg.set_defaults(func=lambda a: cmd_migrate(a, client))


__all__ = ["add_parsers", "cmd_migrate", "outcome"]
