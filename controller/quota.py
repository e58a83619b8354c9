"""Site quotas: pure checks of a new or renewed slice against its site's limits.

Every refusal names the rule and the numbers, e.g. "site princeton: 10 of 10 slices used;
this slice would make 11". A limit of 0 means none. Admins are not bound by site quotas.
"""

from __future__ import annotations

from dataclasses import dataclass

from controller.truststore import Limits
from slices.units import format_bytes


@dataclass(frozen=True)
class Use:
    slices: int = 0
    slivers: int = 0
    cpu: float = 0.0
    memory: int = 0

    def __add__(self, other: Use) -> Use:
        return Use(self.slices + other.slices, self.slivers + other.slivers, self.cpu + other.cpu, self.memory + other.memory)


def refusal(lim: Limits, used: Use, adding: Use) -> str | None:
    """Why a slice using ``adding`` does not fit site ``lim.name`` already using ``used``."""
    after = used + adding
    site = f"site {lim.name}"
    if lim.max_nodes_per_slice and adding.slivers > lim.max_nodes_per_slice:
        return f"{site}: a slice may have at most {lim.max_nodes_per_slice} slivers (max_nodes_per_slice); this one asks for {adding.slivers}"
    if lim.max_slices and after.slices > lim.max_slices:
        return f"{site}: {used.slices} of {lim.max_slices} slices used; this slice would make {after.slices}"
    if lim.max_slivers and after.slivers > lim.max_slivers:
        return f"{site}: {used.slivers} of {lim.max_slivers} slivers used; this slice's {adding.slivers} would make {after.slivers}"
    if lim.max_cpu and after.cpu > lim.max_cpu + 1e-9:
        return f"{site}: {used.cpu:g} of {lim.max_cpu:g} cores used; this slice's {adding.cpu:g} would make {after.cpu:g}"
    if lim.max_memory and after.memory > lim.max_memory:
        return (
            f"{site}: {format_bytes(used.memory)} of {format_bytes(lim.max_memory)} memory used; "
            f"this slice's {format_bytes(adding.memory)} would make {format_bytes(after.memory)}"
        )
    return None
