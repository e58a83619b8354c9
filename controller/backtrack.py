"""A bounded depth-first search for placements that greedy choice misses.

Greedy placement takes the best node for each sliver in turn and never changes its mind, so
an early choice can block a later request that had only a few candidates (the least-loaded
node near Luxembourg is in France; with ``distinct: country`` it blocks the only two nodes of
a request for southern France). When greedy falls short, this search revisits choices in the
same preference order, a few alternatives per step, within a fixed budget of expansions.
It prunes as soon as any unserved request has fewer candidates left than it still needs.
Pure: numpy arrays in, node positions out.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

Mask = npt.NDArray[np.bool_]


def search(
    slots: Sequence[int],
    cands: Sequence[Mask],
    score: npt.NDArray[np.float64],
    distinct_ids: npt.NDArray[np.int32] | None,
    unit: npt.NDArray[np.float64] | None,
    cos_min: float | None,
    *,
    budget: int = 400,
    branch: int = 6,
) -> list[int] | None:
    """Nodes for each slot (a request index per sliver, in serving order), or None."""
    need = np.zeros(len(cands), dtype=np.int64)
    for ri in slots:
        need[ri] += 1
    left = [budget]

    def dfs(k: int, blocked: Mask, need: npt.NDArray[np.int64]) -> list[int] | None:
        if k == len(slots):
            return []
        for waiting in np.flatnonzero(need).tolist():
            if int((cands[waiting] & ~blocked).sum()) < need[waiting]:
                return None  # some request can no longer be served
        ri = slots[k]
        idx = np.flatnonzero(cands[ri] & ~blocked)
        for node in idx[np.argsort(score[idx], kind="stable")[:branch]]:
            left[0] -= 1
            if left[0] < 0:
                return None
            nb = blocked.copy()
            nb[node] = True
            if distinct_ids is not None:
                nb |= distinct_ids == distinct_ids[node]
            if cos_min is not None and unit is not None:
                nb |= (unit @ unit[node]) > cos_min + 1e-12
            nn = need.copy()
            nn[ri] -= 1
            rest = dfs(k + 1, nb, nn)
            if rest is not None:
                return [int(node), *rest]
        return None

    return dfs(0, np.zeros(len(score), dtype=bool), need)
