"""Desired sets sent as changes (protocol 2.10): to an agent that takes them, a node's set
goes as what changed since the last set it applied, not whole. A sliver's spec is the same
object from one push to the next until it changes, so most of a node's set is found unchanged
by identity; the agent keeps the rest (``node_agent/agent.py`` ``_on_desired``)."""

from __future__ import annotations

from slices.model import SliverSpec


def delta(sent: dict[str, SliverSpec], now: list[SliverSpec]) -> tuple[list[SliverSpec], list[str]]:
    """(the specs of ``now`` new since ``sent`` or unequal to what it holds, the ids of
    ``sent`` no longer in ``now``)."""
    changed = [s for s in now if (old := sent.get(s.id)) is not s and old != s]
    if len(now) - len(changed) == len(sent):  # every one sent is still there: nothing gone
        return changed, []
    ids = {s.id for s in now}
    return changed, [sid for sid in sent if sid not in ids]
