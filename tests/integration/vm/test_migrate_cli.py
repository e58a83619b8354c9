"""``slicemesh migrate`` as a researcher types it, on ``slicemesh sim --backend real`` with two
simulated machines (each with real runc containers and QEMU guests): a VM sliver moves live
and its guest keeps counting with the same boot id; a container sliver moves cold and keeps
its files; ``show`` tells where each went, how, and what it cost; bad requests are refused
with the reason and change nothing."""

from __future__ import annotations

import json
import os
import random
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from vm_helpers import PREFIX

from slices.simcluster import SimCluster
from tests.cli.test_cli import ROOT, SLICEMESH
from tests.conftest import wait_for

pytestmark = pytest.mark.timeout(900)

TOPOLOGY = """site,city,country,continent,lat,lon,machines
princeton,Princeton,US,NA,40.3431,-74.6551,1
berlin,Berlin,DE,EU,52.52,13.40,1
"""
VM = """name: mv-vm
description: a guest that counts while it moves
isolation: vm
resources: {cpu: 1, memory: 128Mi, disk: 64Mi}
command: ["/bin/sh", "-c", "i=0; while :; do i=$((i+1)); echo $i > /tmp/count.new; mv /tmp/count.new /tmp/count; sleep 0.1; done"]
placement: {count: 1}
"""
CONTAINER = """name: mv-ctr
description: a container whose files move with it
resources: {cpu: 0.2, memory: 64Mi, disk: 64Mi}
placement:
  locations: [{site: princeton}]
"""


class Lab:
    def __init__(self, tmp: Path) -> None:
        csv = tmp / "two.csv"
        csv.write_text(TOPOLOGY)
        self.tmp = tmp
        self.sim = SimCluster(
            nodes=None, topology=str(csv), backend="real", prefix=PREFIX + "m", heartbeat_period=0.3, state_dir=str(tmp / "sim"),
            publish_identity=True, first_subnet=random.randrange(2048, 4096), wan=None,
        )  # fmt: skip

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "SLICEMESH_CONTROLLER": self.sim.user_url}
        return subprocess.run([*SLICEMESH, *args], capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT)

    def json(self, *args: str, timeout: float = 120) -> Any:
        r = self.cli(*args, "--json", timeout=timeout)
        assert r.returncode == 0, r.stderr + r.stdout
        return json.loads(r.stdout)

    def run_in(self, slice_name: str, script: str) -> str:
        r = self.cli("exec", slice_name, "--", "/bin/sh", "-c", script)
        assert r.returncode == 0, r.stderr
        return r.stdout.strip()

    def create(self, text: str, name: str) -> dict[str, Any]:
        path = self.tmp / f"{name}.yaml"
        path.write_text(text)
        view = self.json("create", str(path), "--wait", "--wait-timeout", "400", timeout=420)
        assert view["state"] == "running", view
        return view


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    lab = Lab(tmp_path)
    try:
        lab.sim.start(timeout=120)
        yield lab
    finally:
        lab.sim.stop()


def sliver(view: dict[str, Any]) -> dict[str, Any]:
    assert len(view["slivers"]) == 1
    got: dict[str, Any] = view["slivers"][0]
    return got


def test_vm_moves_live_and_container_moves_cold_through_the_cli(lab: Lab) -> None:
    vm = sliver(lab.create(VM, "vm"))
    source, target = vm["node"], ({"princeton-1", "berlin-1"} - {vm["node"]}).pop()
    boot_id = lab.run_in("mv-vm", "cat /proc/sys/kernel/random/boot_id")
    before = int(wait_for(lambda: (n := int(lab.run_in("mv-vm", "cat /tmp/count 2>/dev/null || echo 0"))) >= 3 and n, 120, "the counter"))

    # Refused, with the reason, and nothing changes.
    r = lab.cli("migrate", "mv-vm", "--to", source)
    assert r.returncode != 0 and f"already runs on {source}" in r.stderr
    r = lab.cli("migrate", "mv-vm", "--to", "nowhere-9")
    assert r.returncode != 0 and "no node named 'nowhere-9'" in r.stderr

    moved = lab.json("migrate", "mv-vm", "--auto", "--wait", "--wait-timeout", "400", timeout=420)
    [m] = moved["moves"]
    assert (m["source"], m["target"], m["kind"], m["result"]) == (source, target, "live", "moved"), m
    assert "live migration" in m["detail"] and "downtime" in m["detail"]
    assert f"address {vm['address']} -> " in m["detail"]  # the history records both
    after = int(lab.run_in("mv-vm", "cat /tmp/count"))
    assert after >= before  # it went on counting from where it was
    assert lab.run_in("mv-vm", "cat /proc/sys/kernel/random/boot_id") == boot_id
    view = lab.json("show", "mv-vm")
    s = sliver(view)
    assert s["node"] == target and s["state"] == "running" and s["moves"] == 1 and s["id"] == vm["id"]
    events = [e["event"] for e in s["history"]]
    assert events[-1] == "moved" and "moving" in events, s["history"]

    assert s["address"] and s["address"] != vm["address"]

    pinned = sliver(lab.create(CONTAINER.replace("mv-ctr", "mv-pin"), "pin"))
    r = lab.cli("migrate", "mv-pin", "--auto")  # its placement names one site, which has one node
    assert r.returncode != 0 and "no node can take it under the slice's constraints" in r.stderr and "site princeton" in r.stderr
    assert sliver(lab.json("show", "mv-pin"))["node"] == pinned["node"] == "princeton-1"

    ctr = sliver(lab.create(CONTAINER.replace("locations: [{site: princeton}]", "count: 1"), "ctr"))
    other = ({"princeton-1", "berlin-1"} - {ctr["node"]}).pop()
    lab.run_in("mv-ctr", "mkdir -p /data && echo kept > /data/file")
    moved = lab.json("migrate", "mv-ctr", ctr["id"], "--to", other, "--wait", timeout=200)
    [m] = moved["moves"]
    assert (m["kind"], m["result"]) == ("cold", "moved") and "cold move" in m["detail"] and "without CRIU" in m["detail"], m
    assert lab.run_in("mv-ctr", "cat /data/file") == "kept"
    s = sliver(lab.json("show", "mv-ctr"))
    assert s["node"] == other and s["state"] == "running"
    text = lab.cli("show", "mv-ctr").stdout
    assert "moved" in text and "cold move" in text
