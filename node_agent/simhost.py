"""A process hosting many simulated agents (``slicemesh sim`` starts a few of these).

    python -m node_agent.simhost --controller URL --nodes nodes.json [--backend sim|real] [--state-dir DIR]

With ``--control-stdin`` it reads commands from its parent, one a line: ``crash NODE`` ends
that node's agent as a crash would (``slicemesh sim fail`` of a node sharing this process).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
from pathlib import Path

from node_agent.agent import Agent
from node_agent.backends.base import BackendError
from node_agent.build import simulated_agents
from node_agent.host import AgentHost
from slices import memory
from slices.daemon import on_signals, setup_logging
from slices.transport import Keypair


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="node_agent.simhost")
    p.add_argument("--controller", required=True)
    p.add_argument("--nodes", required=True, help="JSON list of NodeInfo maps")
    p.add_argument("--keys", required=True, help='JSON {"server": KEY, "agents": {NODE: [PUBLIC, SECRET]}} (mode 0600)')
    p.add_argument("--backend", choices=("sim", "real"), default="sim")
    p.add_argument("--state-dir", default=None)
    p.add_argument("--heartbeat-period", type=float, default=1.0)
    p.add_argument("--log-level", default="warning")
    p.add_argument("--prefix", default="slicemesh", help="cgroup/bridge/netns prefix for real containers")
    p.add_argument("--first-subnet", type=int, default=0, help="index of this host's first node among all nodes")
    p.add_argument("--control-stdin", action="store_true", help="read `crash NODE` lines on stdin")
    p.add_argument("--nice", type=int, default=0, help="lower this host's CPU priority by this much (benchmarks: simulated machines stand for other machines)")
    p.add_argument("--positions", default=None, help="comma-separated index of each node among all nodes (instead of --first-subnet)")
    a = p.parse_args(argv)
    setup_logging(a.log_level)
    raise_fd_limit()
    memory.map_large_blocks()
    if a.nice > 0:
        os.nice(min(a.nice, 19))
    nodes = json.loads(Path(a.nodes).read_text())
    keys = json.loads(Path(a.keys).read_text())
    agents = simulated_agents(
        nodes,
        a.controller,
        server_key=keys["server"],
        keys={name: Keypair(pub, sec) for name, (pub, sec) in keys["agents"].items()},
        backend=a.backend,
        state_dir=Path(a.state_dir) if a.state_dir else None,
        period=a.heartbeat_period,
        prefix=a.prefix,
        first_subnet=a.first_subnet,
        positions=[int(k) for k in a.positions.split(",")] if a.positions else None,
    )
    host = AgentHost(agents)
    if a.control_stdin:
        host.readers[0] = ControlPipe(host, 0).read
        host.poller.add(0)
    on_signals(host.stop)
    host.run()
    live = [agent for agent in agents if agent.name not in host.crashed]  # a crashed one may run elsewhere now
    if a.backend == "real":
        teardown(live)
    else:
        for agent in live:
            agent.close_backends()
    return 0


class ControlPipe:
    """Commands from the simulation, one a line, on a pipe it holds."""

    def __init__(self, host: AgentHost, fd: int) -> None:
        self.host, self.fd, self.buf = host, fd, b""

    def read(self) -> None:
        data = os.read(self.fd, 4096)
        if not data:  # the simulation closed it (or ended): nothing more will come
            self.host.unwatch(self.fd)
            return
        *lines, self.buf = (self.buf + data).split(b"\n")
        for line in lines:
            verb, _, name = line.decode(errors="replace").strip().partition(" ")
            if verb == "crash":
                if not self.host.crash(name):
                    logging.getLogger("slicemesh.simhost").error("crash %s: no such agent runs here", name)
            elif verb:
                logging.getLogger("slicemesh.simhost").error("unknown control command %r", verb)


def teardown(agents: list[Agent]) -> None:
    """Simulated machines vanish with the simulation: destroy their real slivers, bridges and
    cgroups (a real machine's agent, by contrast, leaves its slivers running)."""
    log = logging.getLogger("slicemesh.simhost")
    for agent in agents:
        for backend in {id(b): b for b in agent.backends.values()}.values():
            for st in backend.list():
                try:
                    backend.destroy(st.id)
                except BackendError as exc:
                    log.error("%s: could not destroy %s: %s", agent.name, st.id, exc.reason)
            backend.close()
        if agent.machine is not None:
            agent.machine.forget()  # bridge, node cgroup, the netns + veth kept ready


if __name__ == "__main__":
    raise SystemExit(main())
