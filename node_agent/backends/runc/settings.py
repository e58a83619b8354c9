"""The runc backend's section of the agent settings (``runc:`` in agent.yaml)."""

from __future__ import annotations

from dataclasses import dataclass

from slices.settings import setting


@dataclass(frozen=True)
class RuncSettings:
    pids_limit: int = setting(512, "process limit per container sliver")
    runtime: str = setting("runc", "OCI runtime binary")
    log_max_bytes: int = setting(1024 * 1024, "per-sliver output log size before rotation (one old file kept)")
    start_timeout: float = setting(30.0, "seconds runc may take to start a sliver before the start counts as failed")
    stop_timeout: float = setting(5.0, "seconds a sliver's init gets after SIGTERM before everything in it is killed")
    warm_slots: int = setting(2, "slivers kept ready to start (disk copied and mounted, netns + veth, supervisor); 0: each is made at create")
    incoming_timeout: float = setting(900.0, "seconds a sliver being moved here (cold) may wait for its disk before it is failed (and the move abandoned)")
