"""A slice's state kept from counts (controller/records.py, ``quick_state``) agrees with the
full look at its slivers, whatever order their states change in, over a real store."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from benchmarks.common import slice_doc
from controller.lifecycle import slice_state
from controller.steps import complete
from tests.inprocess import cluster_of

pytestmark = pytest.mark.timeout(60)
STATES = ("pending", "running", "failed", "exited", "stopped", "lost")


def test_the_counted_state_is_the_looked_at_state(tmp_path: Path) -> None:
    cluster, clock = cluster_of(tmp_path, 30)
    cluster.flush()
    for name, count in (("small", 3), ("big", 25)):
        complete(cluster.create_steps(slice_doc(name, count, distinct="none", cpu=0.01, memory="4Mi"), "admin", f"r-{name}", clock(), site="-"))
    cluster.flush()
    rng = random.Random(7)
    seen = set()
    for step in range(3_000):
        sl = cluster.slices[rng.choice(["small", "big"])]
        sid = rng.choice(sl.slivers)
        # mostly the climb of a slice coming up, with failures, exits and losses among it
        state = "running" if rng.random() < 0.5 else rng.choice(STATES)
        cluster.set_sliver(sid, state, None if state == "running" else f"step {step}", gave_up=state == "failed" and rng.random() < 0.5)
        if step % 7 == 0:
            cluster.flush()
            for s in cluster.slices.values():
                members = [cluster.slivers[i] for i in s.slivers]
                assert (s.running, s.pending) == (sum(m.state == "running" for m in members), sum(m.state == "pending" for m in members))
                assert s.state == slice_state(m.outlook for m in members), (s.name, step)
                seen.add(s.state)
    assert {"running", "pending", "degraded"} <= seen, seen
