"""Scratch state files (simulated machines): replaced whole, in place, never renamed over.

ext4 starts writing a file's data out when a file is renamed over it or truncated to zero;
hundreds of those a second held a host of simulated machines in ``rename`` for seconds (nodes
falsely marked down), and creating, renaming and removing files cost 0.3-0.6 ms per write.
``write_scratch`` writes over the older of two slot files, with a header whose CRC tells a
whole write from one a crash tore; ``read_scratch`` takes the newest whole one.
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from slices.statefile import ScratchWriter, read_scratch, write_atomic, write_scratch

pytestmark = pytest.mark.timeout(10)


def names(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


def test_a_scratch_file_is_replaced_whole_and_only_its_two_slots_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    assert read_scratch(path) is None, "nothing written yet"
    assert write_scratch(path, b"one", mode=0o600) == 1
    assert write_scratch(path, b"two", mode=0o600) == 2
    assert read_scratch(path) == b"two"
    write_scratch(path, b"three", mode=0o600)
    assert read_scratch(path) == b"three"
    assert names(tmp_path) == ["state.json.0", "state.json.1"], "no temporary or aside file is left"
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in tmp_path.iterdir())


def test_once_both_slots_exist_a_write_creates_renames_and_empties_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "state.json"
    write_scratch(path, b"x" * 100_000)
    seq = write_scratch(path, b"y" * 100_000)
    flags: list[int] = []
    truncated: list[int] = []
    real_open, real_truncate = os.open, os.ftruncate

    def refuse(*args: object) -> None:
        raise AssertionError("a rename makes ext4 write the data out")

    def record_open(p: str | os.PathLike[str], fl: int, mode: int = 0o777) -> int:
        flags.append(fl)
        return real_open(p, fl, mode)

    def record_truncate(fd: int, length: int) -> None:
        truncated.append(length)
        real_truncate(fd, length)

    monkeypatch.setattr(os, "rename", refuse)
    monkeypatch.setattr(os, "replace", refuse)
    monkeypatch.setattr(os, "open", record_open)
    monkeypatch.setattr(os, "ftruncate", record_truncate)
    for i in range(4):
        seq = write_scratch(path, f"new {i}".encode(), seq=seq + 1)
    assert read_scratch(path) == b"new 3"
    assert flags and not any(fl & (os.O_TRUNC | os.O_EXCL) for fl in flags), "truncating to zero makes ext4 write the data out"
    assert truncated and 0 not in truncated, "a slot that held 100 kB shrinks, never to zero"
    assert names(tmp_path) == ["state.json.0", "state.json.1"]
    assert max(p.stat().st_size for p in tmp_path.iterdir()) < 100, "the old content's room is given back"


def test_a_write_torn_by_a_crash_leaves_the_one_before_readable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "state.json"
    write_scratch(path, b"old " * 1000)
    real = os.pwrite

    def die_halfway(fd: int, data: bytes, offset: int) -> int:
        real(fd, data[: len(data) // 2], offset)
        raise KeyboardInterrupt("the process dies here")

    monkeypatch.setattr(os, "pwrite", die_halfway)
    with pytest.raises(KeyboardInterrupt):
        write_scratch(path, b"new " * 1000)
    monkeypatch.setattr(os, "pwrite", real)
    assert read_scratch(path) == b"old " * 1000, "the torn slot fails its CRC; the other holds the write before"
    write_scratch(path, b"next")  # the next write after a restart finds its sequence in the slots
    assert read_scratch(path) == b"next"
    write_scratch(path, b"after")
    assert read_scratch(path) == b"after"


def test_slots_that_hold_no_whole_write_are_an_error_not_nothing(tmp_path: Path) -> None:
    """A caller told "nothing was written" would forget state it still has (an agent would
    destroy slivers it runs)."""
    path = tmp_path / "state.json"
    write_scratch(path, b"one")
    write_scratch(path, b"two")
    for slot in tmp_path.iterdir():
        slot.write_bytes(slot.read_bytes()[:-1] + b"!")
    with pytest.raises(ValueError, match="no scratch slot holds a whole write"):
        read_scratch(path)


def test_the_newest_of_a_whole_file_and_the_slots_is_read(tmp_path: Path) -> None:
    """A state directory a simulated machine used (slots), then a real one (``write_atomic``),
    then a simulated one again."""
    path = tmp_path / "state.json"
    write_scratch(path, b"simulated")
    write_atomic(path, b"real", fsync=False)
    slot_time = max(p.stat().st_mtime_ns for p in tmp_path.glob("state.json.*"))
    os.utime(path, ns=(slot_time + 10**9, slot_time + 10**9))
    assert read_scratch(path) == b"real"
    write_scratch(path, b"simulated again")
    assert read_scratch(path) == b"simulated again"
    assert names(tmp_path) == ["state.json.0", "state.json.1"], "the first scratch write removes the whole file it replaces"


def test_an_older_slicemeshs_scratch_files_are_read_and_then_replaced(tmp_path: Path) -> None:
    """Before slots, ``write_scratch`` replaced the file itself and moved the old one aside
    while it wrote: a crash there left only ``.<name>.aside``."""
    path = tmp_path / "state.json"
    (tmp_path / ".state.json.aside").write_bytes(b"aside")
    assert read_scratch(path) == b"aside"
    path.write_bytes(b"whole")
    assert read_scratch(path) == b"whole"
    write_scratch(path, b"slotted")
    assert read_scratch(path) == b"slotted"
    assert names(tmp_path) == ["state.json.1"]


def test_a_slot_left_more_open_than_asked_is_narrowed(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    for slot in ("state.json.0", "state.json.1"):
        (tmp_path / slot).write_bytes(b"")
        os.chmod(tmp_path / slot, 0o666)
    write_scratch(path, b"secret", mode=0o600)
    write_scratch(path, b"secret", mode=0o600)
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in tmp_path.iterdir())


def test_the_scratch_thread_writes_the_latest_content_and_survives_a_failed_write(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    writer = ScratchWriter()
    path = tmp_path / "deep" / "state.json"  # its directory is made on the thread
    for i in range(200):
        writer.put(path, f"v{i}".encode(), mode=0o600)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    writer.put(blocker / "under-a-file.json", b"x")  # cannot be written: logged, the thread goes on
    assert writer.flush(timeout=5)
    assert read_scratch(path) == b"v199" and {stat.S_IMODE(p.stat().st_mode) for p in path.parent.iterdir()} == {0o600}
    assert "cannot write" in caplog.text
    writer.put(path, b"after")
    assert writer.flush(timeout=5) and read_scratch(path) == b"after"


def test_the_scratch_thread_makes_a_removed_directory_again(tmp_path: Path) -> None:
    """A simulated machine's state wiped while its host runs: the next write makes it again."""
    writer = ScratchWriter()
    path = tmp_path / "node" / "state.json"
    writer.put(path, b"one")
    assert writer.flush(timeout=5)
    for p in path.parent.iterdir():
        p.unlink()
    path.parent.rmdir()
    writer.put(path, b"two")
    assert writer.flush(timeout=5) and read_scratch(path) == b"two"


def test_a_simulated_machine_whose_records_are_damaged_starts_empty_and_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Its host process goes on (the controller resends what ran there), rather than dying
    on a file."""
    from node_agent.backends.sim import SimBackend

    path = tmp_path / "sim-slivers.json"
    write_scratch(path, b"{}")
    (tmp_path / "sim-slivers.json.1").write_bytes(b"SMSCRAT1 and then garbage")
    assert SimBackend(path).slivers == {}
    assert "unreadable" in caplog.text


def test_changes_made_while_the_thread_gathers_are_written_once_each(tmp_path: Path) -> None:
    """A host's machines change their files faster than it is worth waking the thread for:
    what is put while it gathers (``GATHER``) goes in one pass, each path's latest content
    once, not a write (and a wake of the thread) per change."""
    writes: list[Path] = []

    class Counting(ScratchWriter):
        def _write(self, path: Path, data: bytes, mode: int) -> None:
            writes.append(path)
            super()._write(path, data, mode)

    writer = Counting()
    path = tmp_path / "m" / "state.json"
    for i in range(20):  # a change every 2 ms: each one written apart before
        writer.put(path, f"v{i}".encode())
        time.sleep(0.002)
    assert writer.flush(timeout=5)
    assert read_scratch(path) == b"v19"
    assert len(writes) <= 20 * 0.002 / Counting.GATHER + 2, f"{len(writes)} writes for 20 changes over 40 ms"
