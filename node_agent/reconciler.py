"""Desired vs actual: what to create and what to destroy. Pure, like PlanetLab's NodeManager.

A sliver that failed (e.g. ``oom-killed``) is left as it is rather than restarted in a loop:
its state tells the researcher what happened, and deleting or recreating the slice resets it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from slices.model import SliverSpec, SliverStatus


@dataclass(frozen=True)
class Actions:
    create: tuple[SliverSpec, ...]
    destroy: tuple[str, ...]

    def __bool__(self) -> bool:
        return bool(self.create or self.destroy)


def diff(desired: Mapping[str, SliverSpec], actual: Mapping[str, SliverStatus]) -> Actions:
    create = tuple(spec for sid, spec in sorted(desired.items()) if sid not in actual or actual[sid].state == "lost")
    destroy = tuple(sorted(sid for sid in actual if sid not in desired))
    return Actions(create=create, destroy=destroy)
