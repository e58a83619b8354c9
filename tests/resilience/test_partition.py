"""A partition: one agent cut off from the controller by a real network fault.

The agent (``slicemesh agent`` as an operator runs it, sim backend) lives in its own network
namespace, joined to the host by a veth pair on a private /30; the controller listens on the
host end's address. Cutting the link (``ip link set <host end> down``) is a real fault: no
process is paused, both daemons keep running and only their packets stop. What must hold:
the agent keeps its slivers; the controller marks the node down, re-places the sliver of the
slice that says ``on_node_failure: replace`` (same id, another node at the requested site) and
leaves the one that says ``keep``; once the link is back both sides converge and each sliver
runs exactly once.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import random
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from slices.catalogue import builtin_catalogue
from slices.client import Client
from slices.protocol import CreateSlice, ListNodes, ShowSlice, SliceView, SliverView
from slices.simcluster import sim_nodes
from slices.statefile import read_scratch
from slices.transport import new_keypair, write_keypair
from tests.conftest import AgentsThread, ControllerThread, wait_for

pytestmark = pytest.mark.timeout(60)
ROOT = Path(__file__).resolve().parents[2]
PERIOD = 0.2  # heartbeat period of controller and agents (ControllerThread's default)
MISSES = 3  # liveness_misses (ControllerThread) and controller_misses (agent)
REPLACE_AFTER = 3.0  # the controller's default grace, in periods
CUT = "lab-cut"  # the partitioned node; its site is princeton, where two host-side nodes also are
POOLS = [ipaddress.IPv4Network("10.0.0.0/8"), ipaddress.IPv4Network("172.16.0.0/12")]


def free_slash30(taken: list[ipaddress.IPv4Network], rng: random.Random) -> ipaddress.IPv4Network:
    """A random private /30 that overlaps no network already on this host."""
    for _ in range(1000):
        pool = rng.choice(POOLS)
        offset = rng.randrange(pool.num_addresses // 4) * 4
        net = ipaddress.IPv4Network((int(pool.network_address) + offset, 30))
        if not any(net.overlaps(t) for t in taken):
            return net
    raise RuntimeError("no free /30 found in 10/8 or 172.16/12")


def host_networks() -> list[ipaddress.IPv4Network]:
    """Every IPv4 network the host routes or holds an address in (default route aside)."""
    nets = []
    for r in json.loads(subprocess.run(["ip", "-j", "-4", "route", "show", "table", "all"], capture_output=True, text=True, check=True).stdout):
        if r.get("dst") not in (None, "default"):
            nets.append(ipaddress.IPv4Network(r["dst"], strict=False))
    for link in json.loads(subprocess.run(["ip", "-j", "-4", "addr"], capture_output=True, text=True, check=True).stdout):
        for a in link.get("addr_info", []):
            nets.append(ipaddress.IPv4Network(f"{a['local']}/{a['prefixlen']}", strict=False))
    return nets


def ip(*args: str) -> None:
    r = subprocess.run(["ip", *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {r.stderr.strip()}")


class Link:
    """A network namespace joined to the host by a veth pair, named from a random token so
    concurrent runs cannot collide; ``cut`` and ``mend`` take the host end down and up."""

    def __init__(self) -> None:
        token = secrets.token_hex(3)
        self.ns, self.host_end, self.ns_end = f"smp{token}", f"smp{token}h", f"smp{token}n"
        net = free_slash30(host_networks(), random.SystemRandom())
        self.host_ip, self.ns_ip = (str(h) for h in net.hosts())
        self.prefix = net.prefixlen

    def make(self) -> None:
        ip("netns", "add", self.ns)
        ip("link", "add", self.host_end, "type", "veth", "peer", "name", self.ns_end)
        ip("link", "set", self.ns_end, "netns", self.ns)
        ip("addr", "add", f"{self.host_ip}/{self.prefix}", "dev", self.host_end)
        ip("link", "set", self.host_end, "up")
        ip("-n", self.ns, "addr", "add", f"{self.ns_ip}/{self.prefix}", "dev", self.ns_end)
        ip("-n", self.ns, "link", "set", self.ns_end, "up")
        ip("-n", self.ns, "link", "set", "lo", "up")

    def cut(self) -> None:
        ip("link", "set", self.host_end, "down")

    def mend(self) -> None:
        ip("link", "set", self.host_end, "up")

    def remove(self) -> None:
        subprocess.run(["ip", "link", "del", self.host_end], capture_output=True)  # takes its peer along
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)

    def leftovers(self) -> list[str]:
        links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
        spaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        return [n for n in (self.host_end, self.ns_end, self.ns) if n in links or n in spaces.split()]


@pytest.fixture
def link() -> Iterator[Link]:
    if os.geteuid() != 0:
        pytest.skip("needs root: a network namespace and a veth pair")
    if shutil.which("ip") is None:
        pytest.skip("ip is not installed (Debian package iproute2)")
    lk = Link()
    try:
        lk.make()
        yield lk
    finally:
        lk.remove()
    assert lk.leftovers() == [], "the namespace and both veth ends are gone"


class CutAgent:
    """``slicemesh agent`` (sim backend) started inside the link's namespace."""

    def __init__(self, lk: Link, controller: ControllerThread, tmp: Path) -> None:
        self.state = tmp / CUT
        pair = new_keypair()
        write_keypair(self.state / "agent", pair)  # pre-seeded, as an operator would
        controller.trust({CUT: pair})
        port = controller.url.rsplit(":", 1)[1]
        settings = {
            "controller": f"tcp://{lk.host_ip}:{port}",
            "controller_key": str(Path(controller.settings.keys_dir) / "controller.key"),
            "name": CUT,
            "site": "princeton",
            "location": "{city: Princeton, country: US, region: north-america, lat: 40.3431, lon: -74.6551}",
            "backends": "{container: sim, vm: sim}",
            "capacity": "{cpu: 4, memory: 8Gi, disk: 100Gi}",
            "reserve": "{cpu: 1, memory: 512Mi, disk: 1Gi}",
            "state_dir": str(self.state),
            "heartbeat_period": str(PERIOD),
            "controller_misses": str(MISSES),
        }
        cfg = tmp / f"{CUT}.yaml"
        cfg.write_text("".join(f"{k}: {v}\n" for k, v in settings.items()))
        self.log = tmp / f"{CUT}.log"
        with open(self.log, "wb") as err:
            argv = ["ip", "netns", "exec", lk.ns, sys.executable, "-m", "slices.cli", "agent", "--config", str(cfg)]
            self.proc = subprocess.Popen(argv, cwd=ROOT, stderr=err, env={**os.environ, "SLICEMESH_LOG_LEVEL": "info"})

    def records(self) -> dict[str, str]:
        """The agent's own view: sliver id -> state, from its sim backend's records on disk."""
        raw = read_scratch(self.state / "sim-slivers.json")  # written on the agent's scratch thread
        return {sid: rec["state"] for sid, rec in json.loads(raw).items()} if raw is not None else {}

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


def sliver(c: Client, name: str) -> SliverView:
    view: SliceView = c.call(ShowSlice(name=name))
    (v,) = view.slivers
    return v


def node_state(c: Client, name: str) -> str:
    return next((n.state for n in c.call(ListNodes()).nodes if n.name == name), "absent")


def holders(agents: AgentsThread, cut: CutAgent, sliver_id: str) -> list[str]:
    """Every node that runs ``sliver_id``, the partitioned one by its own records."""
    found = [a.name for a in agents.agents if a.backends["container"].slivers.get(sliver_id, {}).get("state") == "running"]  # type: ignore[attr-defined]
    return found + ([CUT] if cut.records().get(sliver_id) == "running" else [])


def spec(name: str, on_node_failure: str) -> dict[str, Any]:
    return {
        "name": name,
        "description": f"one sliver on the partitioned node; on_node_failure: {on_node_failure}",
        "resources": {"cpu": 0.5, "memory": "256Mi"},
        "on_node_failure": on_node_failure,
        "placement": {"locations": [{"site": "princeton", "count": 1}], "distinct": "none"},
    }


def test_a_partitioned_agent_keeps_its_slivers_and_both_sides_converge_when_the_link_returns(link: Link, tmp_path: Path) -> None:
    controller = ControllerThread(tmp_path / "c.db", listen=f"tcp://{link.host_ip}:*", period=PERIOD, replace_after=REPLACE_AFTER)
    started: list[CutAgent | AgentsThread] = []
    try:
        cut = CutAgent(link, controller, tmp_path)
        started.append(cut)
        with controller.client() as c:
            wait_for(lambda: node_state(c, CUT) == "up", timeout=20, what="the namespaced agent registered")
            # the only node so far: both slices land on it (site princeton), then the spares join
            c.call(CreateSlice(spec=spec("moves", "replace")))
            c.call(CreateSlice(spec=spec("stays", "keep")))
            wait_for(lambda: all(sliver(c, n).state == "running" for n in ("moves", "stays")), what="both slivers running")
            moves, stays = sliver(c, "moves"), sliver(c, "stays")
            assert moves.node == stays.node == CUT
            others = AgentsThread(controller, sim_nodes(builtin_catalogue(), 3, "sim"), state_dir=tmp_path / "agents", period=PERIOD)
            started.append(others)
            wait_for(lambda: sum(n.state == "up" for n in c.call(ListNodes()).nodes) == 4, what="the host-side nodes up")
            wait_for(lambda: cut.records() == {moves.id: "running", stays.id: "running"}, what="the agent's records")

            link.cut()
            wait_for(lambda: node_state(c, CUT) == "down", timeout=10, what="the partitioned node marked down")
            # The windows run from the last heartbeat the controller got, up to a period before the cut.
            last_heard = controller.server.cluster.registry.nodes[CUT].last_seen
            wait_for(lambda: sliver(c, "moves").node != CUT and sliver(c, "moves").state == "running", timeout=15, what="the replace sliver re-placed")
            silent_for = controller.server.clock() - last_heard
            assert silent_for >= (MISSES + REPLACE_AFTER) * PERIOD, "moved only after liveness timeout plus grace"
            moved = sliver(c, "moves")
            assert moved.id == moves.id and moved.moves == 1, "a sliver keeps its id across a move"
            assert moved.node in ("princeton-1", "princeton-2"), "re-placed under the slice's own location request"
            assert any(e.event == "moved" and f"from {CUT}" in e.detail for e in moved.history)
            kept = sliver(c, "stays")  # healing ran past the grace for every sliver on the node at once
            assert kept.id == stays.id and kept.node == CUT and kept.moves == 0 and kept.state == "lost"
            # the agent, on its side of the cut: still alive, noticed, kept both
            wait_for(lambda: "controller silent" in cut.log.read_text(errors="replace"), timeout=10, what="the agent to notice the silence")
            assert cut.proc.poll() is None
            assert cut.records() == {moves.id: "running", stays.id: "running"}, "a partitioned agent keeps its slivers"
            assert holders(others, cut, moves.id) == [moved.node, CUT], "during the partition both copies exist (the controller cannot reach one)"
            assert node_state(c, CUT) == "down"

            link.mend()
            wait_for(lambda: node_state(c, CUT) == "up", timeout=20, what="the node back up")
            wait_for(lambda: moves.id not in cut.records(), timeout=15, what="the returning node destroys its replaced copy")
            wait_for(lambda: sliver(c, "stays").state == "running", timeout=10, what="the keep sliver running again")
            assert holders(others, cut, moves.id) == [moved.node], "after convergence the replaced sliver runs exactly once"
            assert holders(others, cut, stays.id) == [CUT], "the keep sliver runs on its own node, once"
            assert sliver(c, "moves").node == moved.node and sliver(c, "stays").node == CUT
            views = {n.name: n for n in c.call(ListNodes()).nodes}
            assert views[CUT].slivers == 1 and views[moved.node].slivers == 1, "capacity follows where slivers run"
            assert cut.proc.poll() is None
    finally:
        with contextlib.suppress(Exception):
            link.mend()  # a failure mid-cut: let the agent say goodbye
        for part in reversed(started):
            part.stop()
        controller.stop()
