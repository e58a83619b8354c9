"""The files a pure cgroup v2 host would get (this machine is hybrid, so v2 is checked on a
directory laid out like one: only which files are written with which values)."""

from __future__ import annotations

from pathlib import Path

import pytest

from node_agent.cgroup_limits import Limits, cpu_quota
from node_agent.cgroups import Cgroups

pytestmark = pytest.mark.timeout(10)


def test_v2_node_cap_and_leaf_files(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpu memory pids\n")
    cg = Cgroups("pfx", "n1", root=tmp_path)
    assert cg.layout == "v2"
    cg.ensure_node(1.5, 2 << 30)
    node = tmp_path / "pfx" / "n1"
    assert (node / "cpu.max").read_text() == f"{cpu_quota(1.5)} 100000"
    assert (node / "memory.max").read_text() == str(2 << 30)
    assert (tmp_path / "pfx" / "cgroup.subtree_control").read_text() == "+cpu +memory +pids"
    cg.create_leaf("vm1", Limits(0.25, 128 << 20, 50))
    leaf = node / "vm1"
    got = {f.name: f.read_text() for f in leaf.iterdir()}
    assert got == {"cpu.max": "25000 100000", "cpu.weight": "10", "memory.max": str(128 << 20), "memory.swap.max": "0", "pids.max": "50"}
    cg.join("vm1", 4242)
    assert (leaf / "cgroup.procs").read_text() == "4242"
