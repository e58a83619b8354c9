"""Slice and sliver states: pure rules, no I/O.

A slice is ``running`` when every sliver runs (or finished: ``exited``, a clean exit that is
not restarted), ``exited`` when every sliver finished, ``pending`` while some are still
starting and none has failed, ``failed`` when none runs and none can still start,
``degraded`` otherwise, and ``expired`` once its lease ran out.
"""

from __future__ import annotations

from collections.abc import Iterable

from slices.model import SETTLED_SLICE_STATES


def slice_state(sliver_states: Iterable[str], *, expired: bool = False) -> str:
    if expired:
        return "expired"
    every = list(sliver_states)
    if not every:
        return "failed"
    states = [s for s in every if s != "exited"]  # finished: neither running nor a failure
    if not states:
        return "exited"
    running = states.count("running")
    pending = states.count("pending")
    if running == len(states):
        return "running"
    bad = len(states) - running - pending
    if bad == 0:
        return "pending"
    if running == 0 and pending == 0:
        return "failed"
    return "degraded"


def settled(state: str) -> bool:
    """Whether ``create --wait`` can stop waiting."""
    return state in SETTLED_SLICE_STATES


def renewed_expiry(current: float, extend_by: float, now: float, max_lifetime: float) -> tuple[float, bool]:
    """New expiry after ``renew --for``: extended, but never past ``now + max_lifetime``.

    Returns (expiry, capped).
    """
    wanted = max(current, now) + extend_by
    limit = now + max_lifetime
    return (min(wanted, limit), wanted > limit)
