"""A loop turn sends at most ``push_bytes_budget`` of desired sets (controller/server.py
``_push``): the whole address set of a big slice is ~460 KB to each of its nodes, and one turn
must not queue gigabytes in the send buffers. The rest go in the next turns, none lost."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import hand_run_server
from tests.inprocess import register_sim_nodes

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize(("budget", "per_turn"), [(1, 1), (10**9, 12)])
def test_a_turn_pushes_sets_up_to_its_byte_budget_and_the_rest_next(tmp_path: Path, budget: int, per_turn: int) -> None:
    with hand_run_server(tmp_path, push_bytes_budget=budget) as s:
        register_sim_nodes(s.cluster, 12, s.clock)
        for rec in s.cluster.registry:
            s.cluster.registry.mark(rec, "up")
        s.cluster.dirty_nodes.update(dict.fromkeys(r.name for r in s.cluster.registry))
        turns = []
        while s.cluster.dirty_nodes:
            before = s.stats.pushes
            s._push()
            turns.append(s.stats.pushes - before)
        assert turns[0] == per_turn and sum(turns) == 12 and all(turns), turns
        assert all(r.last_push > 0 for r in s.cluster.registry), "every node had its set"
