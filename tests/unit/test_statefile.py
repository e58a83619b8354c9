"""Scratch state files (simulated machines): replaced whole, never renamed over another file.

ext4 starts writing a file's data out when a file is renamed over it; hundreds of those a
second held a host of simulated machines in ``rename`` for seconds (nodes falsely marked
down). ``write_scratch`` moves the old file aside first; ``read_scratch`` finds it there after
a crash between the two renames.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from slices.statefile import ScratchWriter, read_scratch, write_scratch

pytestmark = pytest.mark.timeout(10)


def test_a_scratch_file_is_replaced_whole_and_nothing_is_left_beside_it(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    assert read_scratch(path) is None, "nothing written yet"
    write_scratch(path, b"one", mode=0o600)
    write_scratch(path, b"two", mode=0o600)
    assert read_scratch(path) == b"two"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"], "no temporary or aside file is left"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_no_rename_lands_on_an_existing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "state.json"
    write_scratch(path, b"old")
    landed_on: list[bool] = []
    real = os.rename

    def rename(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        landed_on.append(Path(dst).exists())
        real(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    for i in range(3):
        write_scratch(path, f"new {i}".encode())
    assert landed_on and not any(landed_on), "a rename over an existing file makes ext4 write the data out"
    assert read_scratch(path) == b"new 2"


def test_a_crash_between_the_renames_leaves_the_old_state_readable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "state.json"
    write_scratch(path, b"old")
    calls = 0
    real = os.rename

    def crash_at_second(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise KeyboardInterrupt("the process dies here")
        real(src, dst)

    monkeypatch.setattr(os, "rename", crash_at_second)
    with pytest.raises(KeyboardInterrupt):
        write_scratch(path, b"new")
    monkeypatch.setattr(os, "rename", real)
    assert not path.exists()
    assert read_scratch(path) == b"old", "the old state is found aside"
    write_scratch(path, b"next")  # the next write after a restart
    assert read_scratch(path) == b"next"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_the_scratch_thread_writes_the_latest_content_and_survives_a_failed_write(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    writer = ScratchWriter()
    path = tmp_path / "deep" / "state.json"  # its directory is made on the thread
    for i in range(200):
        writer.put(path, f"v{i}".encode(), mode=0o600)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    writer.put(blocker / "under-a-file.json", b"x")  # cannot be written: logged, the thread goes on
    assert writer.flush(timeout=5)
    assert read_scratch(path) == b"v199" and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "cannot write" in caplog.text
    writer.put(path, b"after")
    assert writer.flush(timeout=5) and read_scratch(path) == b"after"
