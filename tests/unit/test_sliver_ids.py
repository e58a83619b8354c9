"""Fresh sliver ids (controller/records.py): unique in the slice and beside ids taken."""

from __future__ import annotations

import itertools

from controller.records import new_sliver_ids


def test_ids_never_repeat_even_when_the_random_bytes_do() -> None:
    """A source that repeats itself (as 32 random bits do, about once in 90 slices of 10,000)
    still gives ids that are all different, and none already taken."""
    counter = itertools.count()

    def token(n: int) -> bytes:
        # every 4-byte group is one of three values: most draws repeat an earlier one
        return b"".join((next(counter) % 3).to_bytes(4, "big") for _ in range(n // 4))

    ids = new_sliver_ids("exp", 2, {"exp-00000000"}, token=token)
    assert ids == ["exp-00000001", "exp-00000002"]


def test_many_ids_at_once_are_all_distinct_and_well_formed() -> None:
    ids = new_sliver_ids("big-slice", 20_000, set())
    assert len(set(ids)) == 20_000
    assert all(i.startswith("big-slice-") and len(i) == len("big-slice-") + 8 for i in ids)
