"""Agent settings: defaults -> agent.yaml -> SLICEMESH_* -> command line.

Top-level keys are the node's (identity, capacity, controller) and what every real backend
shares (subnet, cgroup prefix, images); each backend with settings of its own has a section
named like it (``runc:``), typed by the dataclass its row in backends/registry.py names.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any, ClassVar

from node_agent.backends.qemu.settings import QemuSettings
from node_agent.backends.runc.settings import RuncSettings
from slices.settings import setting


@dataclass(frozen=True)
class AgentSettings:
    controller: str = setting("tcp://127.0.0.1:7700", "ZeroMQ endpoint of the controller")
    controller_key: str = setting("/etc/slicemesh/controller.key", "the controller's public CURVE key: a file copied from the controller's keys_dir/controller.key, or the 40-character key itself")
    key_file: str = setting("", "this node's own key pair (made on first start; default <state_dir>/agent.key_secret); its public half is what an operator accepts")
    enrol_token: str = setting("", "a one-time token from `slicemesh keys token` that enrols this node's key without an operator accepting it")
    name: str = setting(socket.gethostname(), "node name, unique in the cluster")
    site: str = setting("", "site the node belongs to (defaults to the node name)")
    location: dict[str, Any] = setting({}, "city, country (ISO 3166 alpha-2), region, lat, lon")
    capacity: dict[str, Any] = setting({}, "cpu, memory, disk offered; empty: read from the machine")
    reserve: dict[str, Any] = setting({"cpu": 1, "memory": "512Mi", "disk": "1Gi"}, "kept for the system, never placed (PlanetLab kept a core)")
    backends: dict[str, Any] = setting({"container": "runc"}, "isolation kind (container, vm) -> backend (sim, runc for containers, qemu for VMs)")
    images: list[str] = setting([], "images offered; empty: whatever the backends can run")
    labels: dict[str, Any] = setting({}, "free-form key: value labels")
    overbook: float = setting(1.0, "placeable capacity = (capacity - reserve) * overbook")
    state_dir: str = setting("/var/lib/slicemesh/agent", "desired-set cache and backend state")
    code_cache_mib: int = setting(4096, "MiB of slices' code bundles kept on this node, least recently used evicted first (bundles in use never are)")
    code_peers: bool = setting(True, "fetch code bundles from peer agents that hold them and send held ones to peers, over TCP on random ports (false: from and to the controller only, e.g. behind NAT)")
    heartbeat_period: float = setting(1.0, "seconds between heartbeats until the controller says otherwise")
    controller_misses: int = setting(3, "unanswered heartbeats before the controller counts as unreachable")
    subnet: str = setting("", "private IPv4 subnet for this node's slivers, containers and VMs alike, routable to every other node and distinct from theirs (docs/networking.md; empty: a /24 derived from the node name)")
    sliver_nat: bool = setting(True, "slivers reach anything that is not a sliver masqueraded behind this host (the uplink must forward: net.ipv4.ip_forward=1)")
    sliver_resolvers: list[str] = setting([], "nameservers written to the slivers' /etc/resolv.conf (empty: the host's non-loopback ones)")
    cgroup_prefix: str = setting("slicemesh", "cgroups live at /<prefix>/<node>/<sliver>; also names bridges, netns and TAPs")
    images_dir: str = setting("/var/lib/slicemesh/images", "shared read-only image bases")
    sliver_host_access: list[str] = setting(
        ["icmp/echo"], "what slivers (containers and VMs) may reach on this host, at their gateway address only: tcp/PORT, udp/PORT, tcp/LOW-HIGH, icmp/echo; all else on the host is refused"
    )
    sliver_userns: bool = setting(True, "run each container sliver in its own user namespace, its root mapped to unprivileged host uids")
    sliver_uid_block: int = setting(64, "this node's slivers own host uids/gids [block * 2^24, (block + 1) * 2^24), 65536 each; 1..127, distinct per node on one host")
    max_frame_bytes: int = setting(16 * 1024 * 1024, "frames from the controller larger than this are logged and dropped (a desired set of thousands of slivers is several MiB)")
    log_level: str = setting("info", "debug, info, warning or error")
    runc: RuncSettings = setting(RuncSettings(), "the container backend (runc)")
    qemu: QemuSettings = setting(QemuSettings(), "the VM backend (qemu)")

    #: keys that moved into a backend's section: an old agent.yaml is told where they went
    MOVED: ClassVar[dict[str, str]] = {"pids_limit": "runc.pids_limit", "runtime": "runc.runtime", "log_max_bytes": "runc.log_max_bytes", "vm_accel": "qemu.accelerator"}
