"""``slicemesh sim``: a controller and many simulated machines on one host.

The controller and the agents run as separate processes over real TCP on loopback; many
agents share a process (each with its own socket and identity) so that thousands fit. Every
child dies with its parent (PR_SET_PDEATHSIG) and is stopped with SIGTERM, then SIGKILL.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from node_agent.wan.emulator import Wan
from node_agent.wan.model import WanNode, WanSettings
from slices import identity
from slices.catalogue import Site, builtin_catalogue, load_topology, spread_nodes
from slices.client import Client
from slices.daemon import die_with_parent
from slices.errors import SliceMeshError
from slices.identity import Identity
from slices.isolation import ISOLATIONS
from slices.model import Capacity, Location, NodeInfo
from slices.protocol import ListNodes, Ping, TrustKeys
from slices.simhosts import Death, SimHosts
from slices.transport import ClientKeys, new_keypair
from slices.wire import to_wire

log = logging.getLogger(__name__)

GiB = 1024**3


def sim_capacity(name: str, backend: str) -> Capacity:
    """Each simulated machine has its own (deterministic) size."""
    if backend == "real":  # real containers and VMs: small enough for this host, large enough
        # for a VM (the smallest bootable guest, 96 MiB, plus QEMU's 96 MiB) beside containers
        return Capacity(cpu=2.0, memory=2 * GiB, disk=20 * GiB)
    h = hashlib.blake2s(name.encode(), digest_size=1).digest()[0]
    return Capacity(cpu=float((4, 8, 16)[h % 3]), memory=(8, 16, 32)[(h // 3) % 3] * GiB, disk=(200, 500, 1000)[(h // 9) % 3] * GiB)


def sim_nodes(sites: list[Site], count: int | None, backend: str) -> list[dict[str, Any]]:
    nodes = []
    for site, i in spread_nodes(sites, count):
        name = f"{site.name}-{i + 1}"
        nodes.append(
            NodeInfo(
                name=name,
                site=site.name,
                location=Location(site.city, site.country, site.region, site.lat, site.lon),
                capacity=sim_capacity(name, backend),
                reserve=Capacity(cpu=0.5 if backend == "real" else 1.0, memory=256 * 1024**2 if backend == "real" else GiB, disk=GiB),
                offers=dict.fromkeys(ISOLATIONS, "sim"),
                images=(),
                labels={"simulated": "true"},
            ).to_wire()
        )
    return nodes


class SimCluster:
    """A controller process and simulated agents in a few host processes.

    ``slicemesh sim``, ``slicemesh demo`` and the benchmarks all start clusters through this
    class; the benchmarks use its extra knobs (controller settings, agents keeping no state).
    """

    def __init__(
        self,
        *,
        nodes: int | None = 24,
        port: int = 0,
        state_dir: str | None = None,
        topology: str | None = None,
        backend: str = "sim",
        per_process: int = 0,
        heartbeat_period: float = 1.0,
        log_level: str = "warning",
        prefix: str = "slicemesh",
        agent_state: bool = True,
        controller_settings: dict[str, Any] | None = None,
        publish_identity: bool = False,
        wan: WanSettings | None = None,
        first_subnet: int = 0,
        agents_nice: int = 0,
    ) -> None:
        sites = load_topology(topology) if topology else builtin_catalogue()
        self.nodes = sim_nodes(sites, None if (topology and nodes is None) else (nodes or 24), backend)
        self.sites = len({n["site"] for n in self.nodes})
        self.port = port
        self.backend = backend
        self.heartbeat_period = heartbeat_period
        self.log_level = log_level
        self.prefix = prefix
        self.agent_state = agent_state or backend == "real"
        self.agents_nice = agents_nice  # the host processes' CPU priority below the controller's (benchmarks)
        self.controller_settings = dict(controller_settings or {})
        self.keep_state = state_dir is not None
        self.dir = Path(state_dir) if state_dir else Path(tempfile.mkdtemp(prefix="slicemesh-sim-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        if per_process <= 0:
            per_process = 8 if backend == "real" else max(16, -(-len(self.nodes) // 4))
        self.per_process = per_process
        self.procs: list[subprocess.Popen[bytes]] = []
        self.url = ""  # the controller's agents' socket
        self.user_url = ""  # its users' socket (clients, the CLI): served first
        # Every key is made and trusted here, so a first run needs no ceremony.
        self.agent_keys = {n["name"]: new_keypair() for n in self.nodes}
        self.identity: Identity | None = None  # the cluster's admin, as the controller made it
        self.publish_identity = publish_identity
        self.published: str | None = None
        self._previous_current: str | None = None
        self.first_subnet = first_subnet
        wan_settings = wan or WanSettings()
        if backend != "real":  # simulated slivers send no packets: nothing to delay
            wan_settings = dataclasses.replace(wan_settings, mode="off")
        self.wan = Wan(wan_settings, prefix=prefix, state_dir=self.dir, log_level=log_level)
        self.machines = SimHosts(self)

    @property
    def state_dir(self) -> Path:
        return self.dir

    @property
    def controller(self) -> subprocess.Popen[bytes]:
        return self.procs[0]

    @property
    def hosts(self) -> list[subprocess.Popen[bytes]]:
        return self.machines.procs()

    def spawn(self, args: list[str], log_name: str, *, control: bool = False) -> subprocess.Popen[bytes]:
        """A child process logging to ``log_name``; ``control``: its stdin is a pipe from us."""
        stdin = subprocess.PIPE if control else subprocess.DEVNULL
        with open(self.dir / log_name, "ab") as logf:
            proc = subprocess.Popen([sys.executable, *args], stdout=logf, stderr=logf, stdin=stdin, preexec_fn=die_with_parent)
        self.procs.append(proc)
        return proc

    def forget(self, proc: subprocess.Popen[bytes]) -> None:
        """A process that ended and was accounted for (its machines failed)."""
        if proc in self.procs:
            self.procs.remove(proc)

    def start(self, timeout: float | None = None) -> str:
        """Start everything; return the controller's URL for users once every agent is up."""
        self.decide_wan()
        self.start_controller()
        self.start_agents(timeout)
        self.start_wan()
        return self.user_url

    def decide_wan(self) -> str:
        """Pick the wide-area path before the agents start, so every node can say which it is
        on (label ``wan``: netem, tun or off; ``slicemesh nodes`` shows it)."""
        path = self.wan.decide()
        if self.backend != "real":
            self.wan.reason = f"the {self.backend} backend's slivers send no packets"
        for n in self.nodes:
            n["labels"] = {**n.get("labels", {}), "wan": path}
        return path

    def wan_nodes(self) -> list[WanNode]:
        """The subnet -> node table the agents were given (by position), with every node's place."""
        from node_agent.addresses import position_subnet
        from node_agent.netdev import bridge_name

        out = []
        for k, n in enumerate(self.nodes):
            loc = n["location"]
            out.append(WanNode(n["name"], n["site"], loc["lat"], loc["lon"], position_subnet(self.first_subnet + k), bridge_name(self.prefix, n["name"])))
        return out

    def start_wan(self) -> None:
        """Route between the nodes' bridges through the chosen path (after the bridges exist)."""
        if self.wan.path != "off":
            self.wan.start(self.wan_nodes())

    @property
    def wan_path(self) -> str:
        """``netem``, ``tun`` or ``off``: how traffic between simulated machines is delayed."""
        return self.wan.path

    def wan_status(self) -> dict[str, Any]:
        return self.wan.status()

    def start_controller(self) -> str:
        ready = self.dir / "controller.url"
        ready.unlink(missing_ok=True)
        config = self.dir / "controller.yaml"
        settings = {
            "listen": f"tcp://127.0.0.1:{self.port or '*'}",
            **({"user_listen": self.user_url} if self.user_url else {}),  # a restart binds where the first start did
            "db": str(self.dir / "controller.db"),
            "keys_dir": str(self.dir / "keys"),
            "log_level": self.log_level,
            "heartbeat_period": self.heartbeat_period,
            **self.controller_settings,
        }
        config.write_text(yaml.safe_dump(settings))
        controller = self.spawn(["-m", "slices.cli", "controller", "--config", str(config), "--ready-file", str(ready)], "controller.log")
        deadline = time.monotonic() + 20
        while not ready.exists():
            if controller.poll() is not None:
                raise SliceMeshError(f"the controller exited with code {controller.returncode}: {self._tail('controller.log')}")
            if time.monotonic() > deadline:
                raise SliceMeshError("the controller did not start within 20 s")
            time.sleep(0.02)
        self.url = ready.read_text().strip()
        self.port = int(self.url.rsplit(":", 1)[1])  # kept: a restarted controller is where its agents look
        admin = identity.read(self.dir / "keys" / "admin.identity.yaml")
        self.identity = admin
        self.user_url = admin.controller  # the controller names its users' socket there
        if self.publish_identity:
            self._publish()
        return self.user_url

    def client(self, timeout: float = 10.0, first_try: float = 1.0) -> Client:
        """A client as the cluster's admin."""
        assert self.identity is not None, "start the controller first"
        return Client(self.user_url, identity=self.identity, timeout=timeout, first_try=first_try)

    def admin_keys(self) -> ClientKeys:
        assert self.identity is not None, "start the controller first"
        return self.identity.keys

    def _publish(self) -> None:
        """Write the admin identity for the CLI (``slicemesh create`` in another terminal)."""
        assert self.identity is not None
        self._previous_current = identity.current_name()
        name = f"sim-{self.url.rsplit(':', 1)[1]}"
        identity.write(Identity(name, self.user_url, self.identity.server_key, self.identity.own, self.identity.user))
        self.published = name

    def _unpublish(self) -> None:
        if self.published is None:
            return
        identity.remove(self.published)
        if self._previous_current is not None and identity.current_name() is None:
            identity.set_current(self._previous_current)
        self.published = None

    def trust_agents(self, names: list[str] | None = None) -> None:
        """Pre-seed the simulated agents' keys, as an operator would with `slicemesh keys add`."""
        wanted = names if names is not None else [n["name"] for n in self.nodes]
        with self.client(timeout=60) as c:
            for k in range(0, len(wanted), 5000):
                c.call(TrustKeys(agents={n: self.agent_keys[n].public for n in wanted[k : k + 5000]}))

    def start_agents(self, timeout: float | None = None) -> None:
        assert self.identity is not None, "start the controller first"
        self.trust_agents()
        self.machines.start_all()
        self.wait_up(len(self.nodes), timeout if timeout is not None else 30 + len(self.nodes) / 50)

    def _tail(self, name: str) -> str:
        lines = self.log_lines(name, "")
        return lines[-1] if lines else "(empty log)"

    def log_lines(self, name: str, needle: str) -> list[str]:
        try:
            text = (self.dir / name).read_text(errors="replace")
        except OSError:
            return []
        return [line for line in text.splitlines() if needle in line]

    def _check_procs(self) -> None:
        """While starting, any process ending is a failed start."""
        for p in self.procs:
            if p.poll() is not None:
                raise SliceMeshError(f"a simulation process exited early (code {p.returncode}); logs in {self.dir}")
        self._check_services()

    def _check_services(self) -> None:
        """Once running, only the controller's or the delay daemon's end is the simulation's."""
        if self.procs and self.controller.poll() is not None:
            raise SliceMeshError(f"the controller exited (code {self.controller.returncode}): {self._tail('controller.log')}; logs in {self.dir}")
        if not self.wan.running():
            raise SliceMeshError(f"the wide-area delay daemon exited early; its log is {self.dir / 'wan.log'}")

    def reap(self) -> list[Death]:
        """Machines whose process ended since the last look (node failures, not the end)."""
        self._check_services()
        return self.machines.reap()

    def node_list(self, client: Client | None = None) -> list[dict[str, Any]]:
        if client is None:
            with self.client(timeout=60) as c:
                return self.node_list(c)
        nodes: list[dict[str, Any]] = to_wire(client.call(ListNodes(rows="arrays")).nodes)
        return nodes

    def wait_up(self, want: int, timeout: float) -> None:
        """Poll the cheap ``ping`` (it counts the nodes up) until ``want`` are up."""
        deadline = time.monotonic() + timeout
        with self.client(timeout=30, first_try=5.0) as client:
            while True:
                self._check_procs()
                up = client.call(Ping()).up
                if up >= want:
                    return
                if time.monotonic() > deadline:
                    raise SliceMeshError(f"only {up} of {want} simulated nodes were up within {timeout:.0f} s")
                time.sleep(0.05 if want < 1000 else 0.5)

    def stop(self) -> None:
        self.wan.stop()
        agents, controller = self.procs[1:], self.procs[:1]
        for group in (agents, controller):  # agents first, so nobody sees its nodes go down
            for p in group:
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
            for p in group:
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
                if p.stdin is not None:
                    p.stdin.close()
        self.procs.clear()
        self.machines.groups.clear()
        self._unpublish()
        if not self.keep_state:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> SimCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def run_until_signal(self, on_ready: Callable[[str], None], say: Callable[[str], None] = log.warning) -> None:
        """Serve until SIGINT/SIGTERM. A machine's process ending is said (``say``) and the
        simulation serves on; ``slicemesh sim fail|restore`` reach it through its run file."""
        from slices.simcontrol import ControlServer

        stopping = False

        def handler(signum: int, frame: object) -> None:
            nonlocal stopping
            stopping = True

        old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            url = self.start()
            with ControlServer(self) as control:
                on_ready(url)
                while not stopping:
                    for death in self.reap():
                        say(death.text())
                    control.serve(0.2, say)
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            self.stop()
