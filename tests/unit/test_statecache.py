"""The agent's desired-set cache holds the slices' secret environment values: only root reads it.

Before, it was written with the umask's mode (0644 under the usual 022), so any local user of a
node read every sliver's secrets in ``<state_dir>/desired.json``.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from node_agent.statecache import Cached, DesiredCache
from slices.model import Resources, SliverSpec
from slices.protocol import Peer
from slices.statefile import SCRATCH, write_atomic

pytestmark = pytest.mark.timeout(10)


def test_the_cache_of_secrets_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    cache = DesiredCache(tmp_path, fsync=False)
    (tmp_path / "desired.json").write_text("{}")
    os.chmod(tmp_path / "desired.json", 0o644)  # an older agent's cache
    spec = SliverSpec(id="s-1", slice="s", isolation="container", image="busybox", resources=Resources(cpu=0.1, memory=1 << 26), env={"TOKEN": "hush"})
    cache.save(Cached(generation=3, desired={spec.id: spec}))
    assert SCRATCH.flush(timeout=5), "a simulated machine's cache is written on the scratch thread"
    files = sorted(tmp_path.iterdir())
    assert [p.name for p in files] == ["desired.json.1"], "the older agent's readable cache is gone; no temporary file is left"
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o600
    loaded = cache.load()
    assert loaded is not None and loaded.desired["s-1"].env == {"TOKEN": "hush"}


def test_a_cache_whose_slots_are_both_damaged_is_unreadable_not_empty(tmp_path: Path) -> None:
    """Not "nothing desired": the agent keeps every sliver until the controller resends."""
    cache = DesiredCache(tmp_path, fsync=False)
    for generation in (1, 2):
        cache.save(Cached(generation=generation))
        assert SCRATCH.flush(timeout=5)
    for slot in tmp_path.iterdir():
        slot.write_bytes(slot.read_bytes()[:-2])
    assert cache.load() is None


def test_other_state_files_keep_the_usual_mode(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    try:
        write_atomic(tmp_path / "plain.json", b"{}")
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "plain.json").stat().st_mode) == 0o644


@pytest.mark.parametrize("fsync", [False, True])
def test_successive_sets_load_as_the_last_one_saved(tmp_path: Path, fsync: bool) -> None:
    """Each sliver's text is kept from save to save (the sets differ by a sliver or two): a
    sliver changed under its id, one gone and one new must all be as in the last set."""
    cache = DesiredCache(tmp_path / "state", fsync=fsync)

    def spec(i: int, cpu: float = 0.1) -> SliverSpec:
        return SliverSpec(id=f"s-{i}", slice="s", isolation="container", image="busybox", resources=Resources(cpu=cpu, memory=1 << 26), env={"N": str(i)})

    sets = [
        {s.id: s for s in (spec(0), spec(1))},
        {s.id: s for s in (spec(0), spec(1, cpu=0.5), spec(2))},  # s-1 changed, s-2 new
        {s.id: s for s in (spec(2), spec(1, cpu=0.5))},  # s-0 gone, another order
        {},
    ]
    for generation, desired in enumerate(sets, 1):
        odd = Cached(generation=generation, desired=desired, cluster="\x00slivers", restarts={"s-1": generation}, peers=[Peer(sliver="p-1", slice="p", address="10.0.0.9")], open_slices=["p"])
        cache.save(odd)
        assert SCRATCH.flush(timeout=5)
        loaded = cache.load()
        assert loaded is not None
        assert (loaded.generation, loaded.desired, list(loaded.desired)) == (generation, desired, list(desired))
        assert (loaded.cluster, loaded.restarts, loaded.peers, loaded.open_slices) == (odd.cluster, odd.restarts, odd.peers, odd.open_slices)
