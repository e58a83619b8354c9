"""A bounded depth-first search for placements that greedy choice misses.

Greedy placement takes the best node for each sliver in turn and never changes its mind, so
an early choice can block a later request that had only a few candidates (the least-loaded
node near Luxembourg is in France; with ``distinct: country`` it blocks the only two nodes of
a request for southern France). When greedy falls short, this search revisits choices in the
same preference order, a few alternatives per step, within a fixed budget of expansions.
It prunes as soon as any unserved request has fewer candidates left than it still needs.

It works on units that a choice rules out as a whole: nodes, or cells of nodes that no
constraint tells apart (controller/nodeindex.py) when each cell can take only one sliver,
which makes each step a few operations over places instead of machines.
Pure: numpy arrays in, unit positions out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

Mask = npt.NDArray[np.bool_]


def search(
    slots: Sequence[int],
    cands: Sequence[Mask],
    score: Sequence[npt.NDArray[np.float64]],
    rules_out: Callable[[int], Mask],
    *,
    blocked: Mask,
    budget: int = 400,
    branch: int = 6,
) -> list[int] | None:
    """Units for each slot (a request index per sliver, in serving order), or None.

    ``cands[r]`` and ``score[r]`` (lower first) are request r's units; ``rules_out(u)`` the
    units a sliver on u rules out, u included; ``blocked`` those ruled out before the search.
    """
    need = np.zeros(len(cands), dtype=np.int64)
    for ri in slots:
        need[ri] += 1
    left = [budget]

    def dfs(k: int, blocked: Mask, need: npt.NDArray[np.int64]) -> list[int] | None:
        if k == len(slots):
            return []
        free = ~blocked
        for waiting in np.flatnonzero(need).tolist():
            if np.count_nonzero(cands[waiting] & free) < need[waiting]:
                return None  # some request can no longer be served
        ri = slots[k]
        idx = np.flatnonzero(cands[ri] & free)
        for unit in idx[np.argsort(score[ri][idx], kind="stable")[:branch]].tolist():
            left[0] -= 1
            if left[0] < 0:
                return None
            nn = need.copy()
            nn[ri] -= 1
            rest = dfs(k + 1, blocked | rules_out(unit), nn)
            if rest is not None:
                return [unit, *rest]
        return None

    return dfs(0, blocked, need)
