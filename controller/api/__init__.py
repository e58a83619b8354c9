"""The controller's request handlers, one module per topic, merged into one dispatch table.

A handler takes the typed message and the ``Call`` it came in (request id, routing peer,
address) and returns the request's reply record, ``DEFERRED`` when the reply comes later
(relayed to an agent, or a wait), or nothing for a notice; it raises ``SliceMeshError`` for a
refusal. The server turns each outcome into exactly one reply.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from controller.cluster import Cluster
from controller.relay import Relay
from controller.settings import ControllerSettings
from slices.protocol import Message


@dataclass(frozen=True)
class Call:
    """Where a message came from, as the transport (not the message) says."""

    id: str  # the request id, echoed in the reply
    peer: bytes  # ROUTER routing id of the connection
    address: str  # the peer's IP address, for logs


Handler = Callable[[Any, Call], Any]


@dataclass
class Context:
    """What every topic's handlers share."""

    cluster: Cluster
    settings: ControllerSettings
    relay: Relay
    clock: Callable[[], float]


def table(ctx: Context) -> dict[type[Message], Handler]:
    from controller.api import agents, nodes, relayed, slices

    out: dict[type[Message], Handler] = {}
    for topic in (agents, slices, nodes, relayed):
        for cls, handler in topic.handlers(ctx).items():
            if cls in out:
                raise ValueError(f"two handlers for {cls.TYPE}")
            out[cls] = handler
    return out
