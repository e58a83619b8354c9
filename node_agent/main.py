"""``slicemesh agent``: run one node's agent until SIGTERM (slivers keep running after)."""

from __future__ import annotations

import logging

from node_agent.build import agent_from_settings
from node_agent.host import AgentHost
from node_agent.settings import AgentSettings
from slices import memory
from slices.daemon import on_signals, setup_logging

log = logging.getLogger("slicemesh.agent")


def run(settings: AgentSettings) -> int:
    setup_logging(settings.log_level)
    memory.map_large_blocks()  # a controller's many-MiB frames are unmapped when dropped
    agent = agent_from_settings(settings)
    info = agent.info
    log.info(
        "agent %s at site %s (%s, %s): %g cores, %d MiB; offers %s; images %s",
        info.name,
        info.site,
        info.location.city,
        info.location.country,
        info.capacity.cpu,
        info.capacity.memory // 2**20,
        ", ".join(f"{k} via {v}" for k, v in sorted(info.offers.items())),
        ", ".join(info.images) or "none",
    )
    host = AgentHost([agent])
    on_signals(host.stop)
    host.run()
    agent.close_backends()
    log.info("agent stopped; %d slivers keep running", len(agent.desired))
    return 0
