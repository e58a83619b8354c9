"""The loop writes a big slice's sliver states a bounded number per turn (controller/cluster.py,
``flush(rows)``), oldest first, over a real store; nothing is dropped and a full flush writes
the rest."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.common import slice_doc
from controller.steps import complete
from tests.inprocess import cluster_of

pytestmark = pytest.mark.timeout(60)


def stored(cluster: object, ids: list[str]) -> dict[str, tuple[str, str | None]]:
    rows = cluster.store.db.execute("SELECT id, state, reason FROM slivers").fetchall()  # type: ignore[attr-defined]
    return {i: (s, r) for i, s, r in rows if i in ids}


def test_sliver_states_are_written_a_bounded_number_per_flush_oldest_first(tmp_path: Path) -> None:
    cluster, clock = cluster_of(tmp_path, 30)
    complete(cluster.create_steps(slice_doc("big", 25, distinct="none", cpu=0.01, memory="4Mi"), "admin", "r1", clock(), site="-"))
    cluster.flush()
    ids = list(cluster.slices["big"].slivers)
    assert {s for s, _ in stored(cluster, ids).values()} == {"pending"}
    for sid in ids:
        cluster.set_sliver(sid, "failed", f"exit {sid[:4]}")
    cluster.set_sliver(ids[0], "running", None)  # changed again while pending: still the oldest
    cluster.flush(10)
    got = stored(cluster, ids)
    assert [got[s][0] for s in ids] == ["running"] + ["failed"] * 9 + ["pending"] * 15, "the ten oldest changes, the rest later"
    assert cluster.unwritten, "the loop must not wait for messages while states wait to be written"
    assert all(cluster.slivers[s].state != "pending" for s in ids), "memory shows every change at once"
    cluster.flush(10)
    assert [stored(cluster, ids)[s][0] for s in ids].count("pending") == 5 and cluster.unwritten
    cluster.flush(10)
    assert not cluster.unwritten
    assert stored(cluster, ids) == {s: ("running", None) if s == ids[0] else ("failed", f"exit {s[:4]}") for s in ids}
    cluster.flush(10)
    assert not cluster.unwritten, "nothing left: nothing more to do"


def test_a_full_flush_writes_every_pending_state(tmp_path: Path) -> None:
    cluster, clock = cluster_of(tmp_path, 30)
    complete(cluster.create_steps(slice_doc("big", 25, distinct="none", cpu=0.01, memory="4Mi"), "admin", "r1", clock(), site="-"))
    cluster.flush()
    ids = list(cluster.slices["big"].slivers)
    for sid in ids:
        cluster.set_sliver(sid, "running", None)
    cluster.flush(7)
    cluster.flush()  # what the server does when it closes
    assert not cluster.unwritten
    assert set(stored(cluster, ids).values()) == {("running", None)}


def test_a_deletes_answer_is_made_in_steps_and_names_every_released_sliver(tmp_path: Path) -> None:
    from controller.api.slices import RELEASED_CHUNK, deleted_reply_steps
    from slices.codec import decode, encode
    from slices.protocol import DeleteSlice, Ok, result_of
    from slices.wire import packable

    released = [(f"{i:016x}", f"node-{i % 7}") for i in range(2 * RELEASED_CHUNK + 5)]
    steps = deleted_reply_steps("big", released)
    made = 0
    while True:
        try:
            next(steps)
            made += 1
        except StopIteration as done:
            answer = done.value
            break
    assert made == 2, "a step per chunk"
    wire = encode(Ok(packable(answer)), id="x", sender="controller")
    back = result_of(DeleteSlice(name="big"), decode(wire, max_bytes=1 << 24).msg)
    assert back.name == "big" and back.slivers == len(released)
    assert [(r.id, r.node) for r in back.released] == released
