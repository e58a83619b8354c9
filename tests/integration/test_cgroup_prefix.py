"""Several agent hosts share one cgroup prefix (a simulation's machines run in several
processes): each makes the prefix if it is missing, and one that finds it made, or made with
its cpuset still empty, goes on. Real cgroups under a per-run name, removed after."""

from __future__ import annotations

import os
import secrets
import threading
from collections.abc import Iterator

import pytest

from node_agent.cgroups import Cgroups, hierarchies

pytestmark = [pytest.mark.root, pytest.mark.timeout(60), pytest.mark.skipif(os.geteuid() != 0, reason="needs root (cgroups)")]


@pytest.fixture
def prefix() -> Iterator[str]:
    name = f"cgp{os.getpid() % 10000}{secrets.token_hex(2)}"
    try:
        yield name
    finally:
        Cgroups(name, "-").remove(name)


def test_a_prefix_another_host_made_with_an_empty_cpuset_is_used_and_filled(prefix: str) -> None:
    tops = hierarchies()
    for top in tops:  # as another host leaves it between its mkdir and its cpuset writes
        (top / prefix).mkdir()
    Cgroups(prefix, "n1").ensure_node(1.0, 256 << 20)
    for top in tops:
        assert (top / prefix / "n1").is_dir()
        for f in ("cpuset.cpus", "cpuset.mems"):
            if (top / prefix / f).exists():
                assert (top / prefix / f).read_text().strip() == (top / f).read_text().strip() != ""
                assert (top / prefix / "n1" / f).read_text().strip() != ""


def test_hosts_making_one_prefix_at_once_all_succeed(prefix: str) -> None:
    nodes = [f"n{i}" for i in range(8)]
    start = threading.Barrier(len(nodes))
    failed: list[BaseException] = []

    def make(node: str) -> None:
        start.wait()
        try:
            Cgroups(prefix, node).ensure_node(0.5, 128 << 20)
        except BaseException as exc:  # the test reports every failure
            failed.append(exc)

    threads = [threading.Thread(target=make, args=(n,)) for n in nodes]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert failed == []
    for top in hierarchies():
        assert sorted(p.name for p in (top / prefix).iterdir() if p.is_dir()) == nodes
