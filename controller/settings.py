"""Controller settings: defaults -> controller.yaml -> SLICEMESH_* -> command line."""

from __future__ import annotations

from dataclasses import dataclass

from slices.settings import setting


@dataclass(frozen=True)
class ControllerSettings:
    listen: str = setting("tcp://*:7700", "ZeroMQ endpoint the ROUTER socket binds")
    db: str = setting("/var/lib/slicemesh/controller.db", "SQLite file holding the desired state (WAL mode)")
    heartbeat_period: float = setting(1.0, "seconds between heartbeats in a small cluster")
    heartbeat_rate: float = setting(2000.0, "heartbeats per second the controller budgets; the period grows with the cluster to stay under it")
    liveness_misses: int = setting(3, "missed heartbeats before a node is marked down")
    max_frame_bytes: int = setting(1024 * 1024, "frames larger than this are logged and dropped")
    lease_check_period: float = setting(1.0, "seconds between checks for expired slices")
    dedupe_entries: int = setting(20_000, "replies remembered so that a retried request is not applied twice")
    log_level: str = setting("info", "debug, info, warning or error")
