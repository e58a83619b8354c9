"""A VM sliver's state from what the host can see: is QEMU alive, what did the guest report.

The guest reports on its events port, which QEMU appends to a file: one JSON object per line,
``{"event": "running", "pid": N}`` once the command runs, ``{"event": "exit", "code": N}`` or
``{"event": "exit", "signal": N}`` when it ends, ``{"event": "stopping", ...}`` on a power-down
request and ``{"event": "error", "reason": "..."}`` when the boot itself fails. Pure.
"""

from __future__ import annotations

import json
from dataclasses import dataclass


@dataclass(frozen=True)
class GuestEvents:
    running: bool = False
    exit: dict[str, int] | None = None
    error: str | None = None


def parse_events(text: str) -> GuestEvents:
    running, exit_rec, error = False, None, None
    for line in text.splitlines():
        try:
            ev = json.loads(line)
        except ValueError:
            continue  # a line the guest was still writing, or one it should not have
        if not isinstance(ev, dict):
            continue
        kind = ev.get("event")
        if kind == "running":
            running = True
        elif kind == "exit":
            exit_rec = {k: int(v) for k, v in ev.items() if k in ("code", "signal") and isinstance(v, int)}
        elif kind == "error":
            error = str(ev.get("reason"))[:300]
    return GuestEvents(running, exit_rec, error)


def vm_state(qemu_alive: bool, desired: str, oom_kills: int, events: GuestEvents) -> tuple[str, str | None]:
    """(state, reason) in the project's sliver states."""
    if qemu_alive:
        if events.exit is not None or desired == "stopped":
            return "pending", "shutting down"
        return ("running", None) if events.running else ("pending", "booting")
    if desired == "stopped":
        return "stopped", None
    if oom_kills > 0:
        return "failed", "oom-killed: QEMU went over the sliver's memory limit (guest RAM + overhead)"
    if events.error:
        return "failed", f"guest boot failed: {events.error}"
    if events.exit is not None:
        if "signal" in events.exit:
            return "failed", f"killed by signal {events.exit['signal']}"
        return "failed", f"exited with code {events.exit.get('code')}"
    if events.running:
        return "failed", "the VM stopped without its command ending (QEMU exited or was killed)"
    return "failed", "the VM stopped before its command started (see its console log)"
