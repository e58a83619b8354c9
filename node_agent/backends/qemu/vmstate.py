"""A VM sliver's state from what the host can see: is QEMU alive, what did the guest report.

The guest reports on its events port, which QEMU appends to a file: one JSON object per line,
``{"event": "running", "pid": N}`` once the command runs, ``{"event": "exit", "code": N}`` or
``{"event": "exit", "signal": N}`` when it ends, ``{"event": "stopping", "why": ...}`` on a
power-down request and ``{"event": "error", "reason": "..."}`` when the boot itself fails. Pure.

States follow the container convention (``backends.base.exit_state``), so the node's restart
policy treats both kinds alike: a command that ended with code 0 is ``exited``, as is a guest
powered off from inside (``poweroff``, ``halt`` or ``reboot``: each asks PID 1, the guest
agent, to stop the command and power off; only the guest's root can); a non-zero code, a
kill, a failed boot or a QEMU that died is ``failed``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from node_agent.backends.base import exit_state


@dataclass(frozen=True)
class GuestEvents:
    running: bool = False
    exit: dict[str, int] | None = None
    error: str | None = None
    stopping: str | None = None  # why a power-down began ("power button": the host's stop)


def parse_events(text: str) -> GuestEvents:
    running, exit_rec, error, stopping = False, None, None, None
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
        elif kind == "stopping" and stopping is None:
            stopping = str(ev.get("why"))[:100]
    return GuestEvents(running, exit_rec, error, stopping)


def vm_state(qemu_alive: bool, desired: str, oom_kills: int, events: GuestEvents) -> tuple[str, str | None]:
    """(state, reason) in the project's sliver states."""
    if qemu_alive:
        if events.exit is not None or events.stopping is not None or desired == "stopped":
            return "pending", "shutting down"
        return ("running", None) if events.running else ("pending", "booting")
    if desired == "stopped":
        return "stopped", None
    if oom_kills > 0:
        return "failed", "oom-killed: QEMU went over the sliver's memory limit (guest RAM + overhead)"
    if events.error:
        return "failed", f"guest boot failed: {events.error}"
    if events.stopping is not None:  # asked from inside while the host wanted it running
        return "exited", "the guest powered off (poweroff, halt or reboot inside it)"
    if events.exit is not None:
        return exit_state(events.exit)
    if events.running:
        return "failed", "the VM stopped without its command ending (QEMU exited or was killed)"
    return "failed", "the VM stopped before its command started (see its console log)"
