"""A process hosting many simulated agents (``slicemesh sim`` starts a few of these).

    python -m node_agent.simhost --controller URL --nodes nodes.json [--backend sim|real] [--state-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import resource
from pathlib import Path

from node_agent.build import simulated_agents
from node_agent.host import AgentHost
from slices.daemon import on_signals, setup_logging


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="node_agent.simhost")
    p.add_argument("--controller", required=True)
    p.add_argument("--nodes", required=True, help="JSON list of NodeInfo maps")
    p.add_argument("--backend", choices=("sim", "real"), default="sim")
    p.add_argument("--state-dir", default=None)
    p.add_argument("--heartbeat-period", type=float, default=1.0)
    p.add_argument("--log-level", default="warning")
    a = p.parse_args(argv)
    setup_logging(a.log_level)
    raise_fd_limit()
    nodes = json.loads(Path(a.nodes).read_text())
    agents = simulated_agents(nodes, a.controller, backend=a.backend, state_dir=Path(a.state_dir) if a.state_dir else None, period=a.heartbeat_period)
    host = AgentHost(agents)
    on_signals(host.stop)
    host.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
