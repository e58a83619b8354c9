"""Agent settings: defaults -> agent.yaml -> SLICEMESH_* -> command line."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any

from slices.settings import setting


@dataclass(frozen=True)
class AgentSettings:
    controller: str = setting("tcp://127.0.0.1:7700", "ZeroMQ endpoint of the controller")
    name: str = setting(socket.gethostname(), "node name, unique in the cluster")
    site: str = setting("", "site the node belongs to (defaults to the node name)")
    location: dict[str, Any] = setting({}, "city, country (ISO 3166 alpha-2), region, lat, lon")
    capacity: dict[str, Any] = setting({}, "cpu, memory, disk offered; empty: read from the machine")
    reserve: dict[str, Any] = setting({"cpu": 1, "memory": "512Mi", "disk": "1Gi"}, "kept for the system, never placed (PlanetLab kept a core)")
    backends: dict[str, Any] = setting({"container": "runc"}, "isolation kind -> backend (sim, runc, qemu)")
    images: list[str] = setting([], "images offered; empty: whatever the backends can run")
    labels: dict[str, Any] = setting({}, "free-form key: value labels")
    overbook: float = setting(1.0, "placeable capacity = (capacity - reserve) * overbook")
    state_dir: str = setting("/var/lib/slicemesh/agent", "desired-set cache and backend state")
    heartbeat_period: float = setting(1.0, "seconds between heartbeats until the controller says otherwise")
    controller_misses: int = setting(3, "unanswered heartbeats before the controller counts as unreachable")
    pids_limit: int = setting(512, "process limit per container sliver")
    subnet: str = setting("", "private IPv4 /24 for this node's slivers (empty: derived from the node name)")
    cgroup_prefix: str = setting("slicemesh", "cgroups live at /<prefix>/<node>/<sliver>; also names bridges and netns")
    images_dir: str = setting("/var/lib/slicemesh/images", "shared read-only image bases")
    runtime: str = setting("runc", "OCI runtime binary")
    vm_accel: str = setting("auto", "VM accelerator: auto (KVM if a probe guest boots with it, else TCG), kvm or tcg")
    log_max_bytes: int = setting(1024 * 1024, "per-sliver output log size before rotation (one old file kept)")
    max_frame_bytes: int = setting(16 * 1024 * 1024, "frames from the controller larger than this are logged and dropped (a desired set of thousands of slivers is several MiB)")
    log_level: str = setting("info", "debug, info, warning or error")
