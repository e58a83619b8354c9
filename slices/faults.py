"""Named crash points, for tests that break things on purpose.

A daemon started with ``SLICEMESH_FAULTS=point[,point...]`` kills itself with SIGKILL the
first time it reaches one of those points: what ``kill -9`` at exactly that phase would
leave (no ``finally``, no flush, no goodbye). Random kills find the common windows; named
points reach every window, every run, so a test can say which phase it broke and a failure
is reproducible.

The variable is read once, at import. Unset (every real deployment), ``hit`` is one test of
an empty set. An unknown point name is refused at start, so a typo never silently tests
nothing. Before dying, the process writes ``fault <point>: SIGKILL`` to stderr (unbuffered,
one ``write``), which a test reads to know where it died.
"""

from __future__ import annotations

import os
import signal

ENV = "SLICEMESH_FAULTS"

#: Every point, and the window it opens. Controller points: a committed change whose reply,
#: push or memory update never happened; agent points: a sliver half made or half removed.
POINTS: dict[str, str] = {
    "create.before_store": "a create placed, nothing written",
    "create.after_store": "a create committed; no reply, no desired set pushed",
    "create.after_reply": "the client has its answer; no agent has been told",
    "create.after_push": "agents were told; their reports not yet folded in or stored",
    "delete.after_store": "a delete committed; no reply, the slivers still run on their nodes",
    "delete.after_reply": "the client has its answer; the slivers still run on their nodes",
    "renew.after_store": "a renewal committed; no reply",
    "heal.after_replace": "a dead node's sliver re-homed in the store; the new node not yet told",
    "drain.after_begin": "a make-before-break move stored; the target not yet told",
    "drain.after_new_running": "the new copy of a draining sliver runs; the move not yet completed",
    "drain.after_complete": "the move completed in the store; the old copy still runs",
    "agent.create.mid": "an agent made part of a sliver (a real one: its network and disk) and not the rest",
    "agent.destroy.mid": "an agent stopped a sliver's processes and removed nothing else",
    "migrate.target_ready": "the target of a migration listens; the source not yet told",
    "agent.move.source_stopped": "a cold move's source stopped the sliver and unmounted its disk; nothing sent",
    "agent.move.target_received": "a cold move's target holds the verified disk; the sliver not started there",
    "agent.move.mid_send": "a cold move's source sent part of the disk image: the transfer is cut",
}


def _armed(text: str) -> frozenset[str]:
    names = frozenset(p.strip() for p in text.split(",") if p.strip())
    unknown = sorted(names - POINTS.keys())
    if unknown:
        raise SystemExit(f"{ENV}: unknown fault point(s) {', '.join(unknown)}; known: {', '.join(POINTS)}")
    return names


ARMED: frozenset[str] = _armed(os.environ.get(ENV, ""))


def hit(point: str) -> None:
    """Die here, by SIGKILL, if ``point`` is armed; otherwise nothing."""
    if ARMED and point in ARMED:
        os.write(2, f"fault {point}: SIGKILL\n".encode())
        os.kill(os.getpid(), signal.SIGKILL)
