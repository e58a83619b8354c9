"""The controller's database under faults: lost, garbage, poisoned records, a full disk.

Each fault is made for real (truncating the file, writing bytes into it, a record stored by
hand, a tmpfs filled to the last byte) and the controller must refuse clearly or keep serving,
and lose nothing once the fault is gone.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controller.storefile import StoreError
from slices.client import RemoteError
from slices.protocol import CreateSlice, DeleteSlice, ListSlices, Ping, ShowSlice
from tests.conftest import AgentsThread, ControllerThread, wait_for

pytestmark = pytest.mark.timeout(90)

DOC = {"name": "keeper", "description": "a slice that must survive every fault here", "resources": {"cpu": 0.1, "memory": "64Mi"}, "placement": {"count": 2}}


def start_with_a_slice(tmp_path: Path, nodes: list[dict[str, Any]]) -> tuple[ControllerThread, AgentsThread]:
    c = ControllerThread(tmp_path / "c.db")
    agents = AgentsThread(c, nodes[:4], state_dir=tmp_path / "agents")
    with c.client() as cl:
        wait_for(lambda: cl.call(Ping()).up == 4, what="all four nodes up")  # a create sooner may find too few sites
        cl.call(CreateSlice(spec=DOC))
        wait_for(lambda: cl.call(ShowSlice(name="keeper")).state == "running", what="running")
    return c, agents


def test_a_truncated_database_is_refused_not_started_empty(tmp_path: Path, nodes24: list[dict[str, Any]]) -> None:
    c, agents = start_with_a_slice(tmp_path, nodes24)
    agents.stop()
    c.stop()
    db = tmp_path / "c.db"
    for suffix in ("", "-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    db.write_bytes(b"")  # truncated to zero
    with pytest.raises(StoreError) as err:
        ControllerThread(db)
    assert str(db) in err.value.reason and "--new-cluster" in err.value.reason and "restore" in err.value.reason
    fresh = ControllerThread(db, new_cluster=True)  # the operator's explicit choice
    try:
        with fresh.client() as cl:
            assert cl.call(ListSlices()).slices == []
        assert fresh.server.store.cluster != json.loads("null")
    finally:
        fresh.stop()


def test_a_garbage_database_is_refused_with_its_path(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    db.write_bytes(os.urandom(8192))
    with pytest.raises(StoreError) as err:
        ControllerThread(db)
    assert str(db) in err.value.reason and "not a usable slicemesh database" in err.value.reason


def test_the_cli_says_so_in_one_line(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    db.write_bytes(b"SQLite format 3\x00" + os.urandom(4000))
    r = subprocess.run([sys.executable, "-m", "slices.cli", "controller", "--db", str(db), "--keys-dir", str(tmp_path / "k"), "--listen", "tcp://127.0.0.1:*"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and str(db) in r.stderr and "Traceback" not in r.stderr


def test_a_poisoned_record_is_quarantined_and_the_rest_is_served(tmp_path: Path, nodes24: list[dict[str, Any]]) -> None:
    c, agents = start_with_a_slice(tmp_path, nodes24)
    agents.stop()
    c.stop()
    db = sqlite3.connect(tmp_path / "c.db")
    poisoned = {**DOC, "name": "poisoned", "resources": {"bandwidth": "99999999999999999999Gbit"}}
    db.execute("INSERT INTO slices VALUES (?,?,?,?,?,?,?,?)", ("poisoned", "admin", json.dumps(poisoned), "running", 1.0, 9e9, None, "admin"))
    db.execute("INSERT INTO slices VALUES (?,?,?,?,?,?,?,?)", ("notjson", "admin", "{not json", "running", 1.0, 9e9, None, "admin"))
    db.commit()
    db.close()
    again = ControllerThread(tmp_path / "c.db")
    try:
        with again.client() as cl:
            assert [s.name for s in cl.call(ListSlices()).slices] == ["keeper"]
            assert len(cl.call(ShowSlice(name="keeper")).slivers) == 2
        kept = {(kind, name) for kind, name, _, _ in again.server.store.quarantined()}
        assert kept == {("slice", "poisoned"), ("slice", "notjson")}
    finally:
        again.stop()
    again = ControllerThread(tmp_path / "c.db")  # and it stays served on the next start
    try:
        with again.client() as cl:
            assert [s.name for s in cl.call(ListSlices()).slices] == ["keeper"]
    finally:
        again.stop()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs")
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(path: Path) -> Path:
    ballast = path / "ballast"
    with open(ballast, "wb", buffering=0) as f:  # unbuffered: the last write fails here, not at close
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError:
            pass
    return ballast


def test_a_full_disk_refuses_writes_serves_reads_and_loses_nothing(small_disk: Path, tmp_path: Path, nodes24: list[dict[str, Any]]) -> None:
    c = ControllerThread(small_disk / "c.db")
    agents = AgentsThread(c, nodes24[:4], state_dir=tmp_path / "agents")
    try:
        with c.client(timeout=10) as cl:
            wait_for(lambda: len(c.server.cluster.registry.nodes) == 4, what="registered")
            cl.call(CreateSlice(spec=DOC))
            wait_for(lambda: cl.call(ShowSlice(name="keeper")).state == "running", what="running")
            ballast = fill(small_disk)
            with pytest.raises(RemoteError) as err:
                cl.call(CreateSlice(spec={**DOC, "name": "second"}))
            assert err.value.code == "unavailable" and "reads still work" in err.value.reason
            with pytest.raises(RemoteError):
                cl.call(DeleteSlice(name="keeper"))
            assert [s.name for s in cl.call(ListSlices()).slices] == ["keeper"], "reads served"
            agents.stop()  # node state changes now queue up in memory: the disk takes none
            wait_for(lambda: cl.call(ShowSlice(name="keeper")).state == "failed", what="nodes seen down")
            assert c.thread.is_alive(), "the controller keeps serving"
            ballast.unlink()  # space returns
            wait_for(lambda: not c.server.cluster._sliver_updates, what="queued state written")
            agents = AgentsThread(c, nodes24[:4], state_dir=tmp_path / "agents")
            wait_for(lambda: cl.call(ShowSlice(name="keeper")).state == "running", what="nodes back")
            cl.call(CreateSlice(spec={**DOC, "name": "second", "placement": {"count": 1}}))
            agents.stop()
            wait_for(lambda: cl.call(ShowSlice(name="keeper")).state == "failed", what="down again")
            wait_for(lambda: not c.server.cluster._slice_writes, what="written")
    finally:
        if agents.thread.is_alive():
            agents.stop()
        c.stop()
    again = ControllerThread(small_disk / "c.db")
    try:
        with again.client() as cl:
            assert sorted(s.name for s in cl.call(ListSlices()).slices) == ["keeper", "second"]
            assert cl.call(ShowSlice(name="keeper")).state == "failed", "the state change made while the disk was full was kept"
    finally:
        again.stop()
