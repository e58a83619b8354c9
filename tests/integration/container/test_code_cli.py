"""A slice brings its own code, as a researcher types it: ``slicemesh create`` of a spec with
``code: {path: DIR}`` packs and uploads the directory, the node pulls the bundle from the
controller, and the container sliver runs ``/code/run.sh`` from its read-only ``/code``; a
second slice with the same code fetches nothing (the node's cache); a VM sliver runs it from
its /code too (a read-only disk); a pushed bundle of several chunks arrives whole. Bad code is refused before
anything is made; a bundle that does not hash to its name is never unpacked."""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ctr_helpers import PREFIX

from controller.contentstore import ContentStore
from node_agent.codecache import CodeCache
from slices import bundle
from slices.errors import SliceMeshError
from slices.simcluster import SimCluster
from tests.cli.test_cli import ROOT, SLICEMESH

pytestmark = pytest.mark.timeout(240)

TOPOLOGY = "site,city,country,continent,lat,lon,machines\nprinceton,Princeton,US,NA,40.3431,-74.6551,1\n"
SPEC = """name: {name}
description: runs its own code
resources: {{cpu: 0.2, memory: 64Mi, disk: 64Mi}}
command: ["/bin/sh", "/code/run.sh"]
code: {{path: {path}, delivery: pull}}
"""


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[tuple[SimCluster, Path]]:
    csv = tmp_path / "one.csv"
    csv.write_text(TOPOLOGY)
    sim = SimCluster(nodes=None, topology=str(csv), backend="real", prefix=PREFIX + "k", heartbeat_period=0.3, state_dir=str(tmp_path / "sim"), publish_identity=True, first_subnet=random.randrange(6000, 7000), wan=None)
    try:
        sim.start(timeout=120)
        yield sim, tmp_path
    finally:
        sim.stop()


def cli(sim: SimCluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SLICEMESH, *args], capture_output=True, text=True, env={**os.environ, "SLICEMESH_CONTROLLER": sim.user_url}, timeout=200, cwd=ROOT)


def show(sim: SimCluster, name: str) -> Any:
    r = cli(sim, "show", name, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_a_slice_runs_its_own_code_from_a_read_only_code_dir(lab: tuple[SimCluster, Path]) -> None:
    sim, tmp = lab
    code = tmp / "mycode"
    (code / "data").mkdir(parents=True)
    (code / "data" / "hello.txt").write_text("hello from my code\n")
    (code / "run.sh").write_text("cat /code/data/hello.txt > /tmp/out; exec sleep 100000\n")
    (tmp / "a.yaml").write_text(SPEC.format(name="coded", path="mycode"))
    r = cli(sim, "create", str(tmp / "a.yaml"), "--wait", "--json")
    assert r.returncode == 0, r.stderr + r.stdout
    assert json.loads(r.stdout)["state"] == "running"
    out = cli(sim, "exec", "coded", "--", "/bin/sh", "-c", "cat /tmp/out; cat /code/data/hello.txt; touch /code/x 2>&1 || echo read-only")
    assert out.stdout.splitlines()[:2] == ["hello from my code", "hello from my code"]  # its command ran from /code
    assert "read-only" in out.stdout.lower()
    [v] = show(sim, "coded")["slivers"]
    assert v["code"].startswith("pulled from the controller in"), v["code"]

    (tmp / "b.yaml").write_text(SPEC.format(name="coded-again", path="mycode"))
    r = cli(sim, "create", str(tmp / "b.yaml"), "--wait", "--json")
    assert r.returncode == 0, r.stderr
    [v] = show(sim, "coded-again")["slivers"]
    assert v["code"] == "cached on this node"

    vm_spec = SPEC.format(name="coded-vm", path="mycode").replace("resources: {cpu: 0.2, memory: 64Mi, disk: 64Mi}", "isolation: vm\nresources: {cpu: 0.5, memory: 128Mi, disk: 64Mi}")
    (tmp / "v.yaml").write_text(vm_spec)
    r = cli(sim, "create", str(tmp / "v.yaml"), "--wait", "--wait-timeout", "200", "--json")
    assert r.returncode == 0, r.stderr
    out = cli(sim, "exec", "coded-vm", "--", "/bin/sh", "-c", "cat /tmp/out; touch /code/x 2>/dev/null || echo read-only")
    assert out.stdout.split("\n")[:2] == ["hello from my code", "read-only"], out.stdout + out.stderr

    pushed = tmp / "pushed"
    pushed.mkdir()
    (pushed / "run.sh").write_text("exec sleep 100000\n")
    (pushed / "big").write_bytes(os.urandom(3 << 20))  # several chunks, more than one window
    (tmp / "p.yaml").write_text(SPEC.format(name="pushed", path="pushed").replace("delivery: pull", "delivery: push"))
    r = cli(sim, "create", str(tmp / "p.yaml"), "--wait", "--json")
    assert r.returncode == 0, r.stderr
    [v] = show(sim, "pushed")["slivers"]
    assert v["code"].startswith("pushed by the controller in"), v["code"]
    got = cli(sim, "exec", "pushed", "--", "/bin/sh", "-c", "sha256sum /code/big").stdout.split()[0]
    assert got == hashlib.sha256((pushed / "big").read_bytes()).hexdigest()

    (tmp / "bad").mkdir()
    os.symlink("/etc/passwd", tmp / "bad" / "escape")
    (tmp / "c.yaml").write_text(SPEC.format(name="escapes", path="bad"))
    r = cli(sim, "create", str(tmp / "c.yaml"))
    assert r.returncode != 0 and "symlink out of the code directory" in r.stderr
    assert cli(sim, "show", "escapes").returncode != 0  # nothing was made


def test_a_second_machine_pulls_the_code_from_the_first(tmp_path: Path) -> None:
    """Two real agents (runc, a worker thread each): the second slice's node gets the bundle
    from the node that already holds it, not from the controller, and runs it."""
    csv = tmp_path / "two.csv"
    csv.write_text(TOPOLOGY + "mit,Cambridge,US,NA,42.3601,-71.0942,1\n")
    sim = SimCluster(nodes=None, topology=str(csv), backend="real", prefix=PREFIX + "q", heartbeat_period=0.3, state_dir=str(tmp_path / "sim"), publish_identity=True, first_subnet=random.randrange(7000, 8000), wan=None)
    try:
        sim.start(timeout=120)
        code = tmp_path / "code"
        code.mkdir()
        (code / "run.sh").write_text("exec sleep 100000\n")
        (code / "big").write_bytes(os.urandom(3 << 20))
        for name, site in (("first", "princeton"), ("second", "mit")):
            (tmp_path / f"{name}.yaml").write_text(SPEC.format(name=name, path="code") + f"placement: {{locations: [{{site: {site}}}]}}\n")
            r = cli(sim, "create", str(tmp_path / f"{name}.yaml"), "--wait", "--json")
            assert r.returncode == 0, r.stderr + r.stdout
        [v] = show(sim, "first")["slivers"]
        assert v["code"].startswith("pulled from the controller in"), v["code"]
        [v] = show(sim, "second")["slivers"]
        assert v["node"] == "mit-1" and v["code"].startswith("pulled from peer princeton-1 in"), v["code"]
        got = cli(sim, "exec", "second", "--", "/bin/sh", "-c", "sha256sum /code/big").stdout.split()[0]
        assert got == hashlib.sha256((code / "big").read_bytes()).hexdigest()
    finally:
        sim.stop()


def test_bundles_are_verified_before_use(tmp_path: Path) -> None:
    """The controller refuses an upload that does not hash to its name; the node never
    unpacks a bundle that does not."""
    good = bundle.pack_dir(Path(__file__).parent)
    digest = hashlib.sha256(good).hexdigest()
    store = ContentStore(tmp_path / "store", max_bundle=len(good))
    bad = bytearray(good)
    bad[100] ^= 1
    assert store.put(digest, len(good), 0, bytes(bad[:1000])) == 1000
    with pytest.raises(SliceMeshError, match="altered or cut"):
        store.put(digest, len(good), 1000, bytes(bad[1000:]))
    assert not store.has(digest) and store.have(digest) == 0
    assert store.put(digest, len(good), 0, good) == len(good) and store.has(digest)
    with pytest.raises(SliceMeshError, match="at most"):
        store.put("b" * 64, len(good) + 1, 0, b"x")

    cache = CodeCache(tmp_path / "cache", 1 << 30)
    cache.write(digest, 0, bytes(bad))
    assert "altered or cut" in (cache.finish(digest) or "")
    assert cache.tree(digest) is None and cache.have(digest) == 0
    cache.write(digest, 0, good)
    assert cache.finish(digest) is None and cache.tree(digest) is not None
    assert bundle.pack_dir(Path(__file__).parent) == good  # deterministic
