"""Replies to changes are kept for retries (controller/replies.py) over a real store: a small
one is written (with the others of its turn, at ``flush``) and survives a restart; a big one is not written, and its retry after a
restart is answered from its change's marker; the replies in memory are bounded in bytes."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.replies import STORED_UP_TO, Applied, Replies
from controller.store import Store

pytestmark = pytest.mark.timeout(30)


def applied(store: Store, key: tuple[str, str], summary: dict[str, int]) -> None:
    """A change's own transaction, marking ``key`` applied, as a handler's write does."""
    store.applying = key
    try:
        with store.transaction(summary=summary):
            pass
    finally:
        store.applying = None


def test_a_small_reply_is_stored_and_a_big_one_is_answered_from_its_marker_after_a_restart(tmp_path: Path) -> None:
    path = str(tmp_path / "c.db")
    store = Store(path, new_cluster=True)
    small, big = ("alice", "r1"), ("alice", "r2")
    applied(store, small, {"n": 1})
    applied(store, big, {"n": 2})
    replies = Replies(store, 100)
    replies.save(small, b"s" * 100, applied=True)
    replies.save(big, b"b" * (STORED_UP_TO + 1), applied=True)
    assert replies.known(big) == b"b" * (STORED_UP_TO + 1), "in memory, the same answer"
    assert store.reply_to(small) == (None, {"n": 1}), "not written before the turn's flush: only its marker"
    replies.recent.clear()
    assert replies.known(small) == b"s" * 100, "saved and not yet written: known all the same"
    replies.flush()
    assert not replies.pending
    store.close()
    restarted = Replies(Store(path), 100)
    assert restarted.known(small) == b"s" * 100
    assert restarted.known(big) == Applied({"n": 2}), "not written: answered from what the change did"
    assert restarted.known(("alice", "never")) is None


def test_replies_in_memory_are_bounded_in_bytes_newest_kept(tmp_path: Path) -> None:
    replies = Replies(Store(str(tmp_path / "c.db"), new_cluster=True), 100, recent_bytes=25)
    for i in range(5):
        replies.save(("bob", f"r{i}"), bytes([i]) * 10, applied=False)
    assert list(replies.recent) == [("bob", "r3"), ("bob", "r4")]
    replies.save(("bob", "r4"), b"x" * 40, applied=False)  # the same request again, bigger than the bound
    assert list(replies.recent) == [("bob", "r4")], "the newest is kept even alone over the bound"
    replies.save(("bob", "r5"), b"y" * 5, applied=False)
    assert list(replies.recent) == [("bob", "r5")] and replies.known(("bob", "r5")) == b"y" * 5
