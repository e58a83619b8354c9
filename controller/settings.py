"""Controller settings: defaults -> controller.yaml -> SLICEMESH_* -> command line."""

from __future__ import annotations

from dataclasses import dataclass

from slices.settings import setting


@dataclass(frozen=True)
class ControllerSettings:
    listen: str = setting("tcp://*:7700", "ZeroMQ endpoint the ROUTER socket binds")
    db: str = setting("/var/lib/slicemesh/controller.db", "SQLite file holding the desired state (WAL mode)")
    new_cluster: bool = setting(False, "start an empty cluster even though the database beside its marker (<db>.cluster) was lost: agents keep their slivers as orphans")
    heartbeat_period: float = setting(1.0, "seconds between heartbeats in a small cluster")
    heartbeat_rate: float = setting(2000.0, "heartbeats per second the controller budgets; the period grows with the cluster to stay under it")
    liveness_misses: int = setting(3, "missed heartbeats before a node is marked down")
    restart_grace: float = setting(10.0, "seconds after the controller starts before a silent node is counted down: agents that lost it re-register with a backoff of up to 6 s, and counting them down sooner would mark their slivers lost and move them")
    replace_after: float = setting(3.0, "heartbeat periods a node stays down or stopped before its slivers (of slices that say on_node_failure: replace) are placed elsewhere; a short blip moves nothing")
    max_frame_bytes: int = setting(1024 * 1024, "frames larger than this are logged and dropped")
    lease_check_period: float = setting(1.0, "seconds between checks for expired slices")
    dedupe_entries: int = setting(20_000, "replies remembered so that a retried request is not applied twice")
    keys_dir: str = setting("/var/lib/slicemesh/keys", "the controller's CURVE key pair (controller.key is the public half to give agents and users) and the first admin's identity")
    advertise: str = setting("", "the URL agents and users reach this controller at, written into identity files (default: tcp://<hostname>:<port>)")
    max_pending_keys: int = setting(1000, "unaccepted agent keys remembered at most; more are refused until an operator accepts or rejects some")
    unknown_key_rate: float = setting(20.0, "handshakes and requests per second served for keys the controller does not know (enrolment); the rest get no answer")
    site_max_slices: int = setting(10, "default per-site limit on slices (0: none); `slicemesh sites set` overrides it per site")
    site_max_slivers: int = setting(1000, "default per-site limit on slivers in all its slices (0: none)")
    site_max_cpu: float = setting(0.0, "default per-site limit on cores held by its slices (0: none)")
    site_max_memory: int = setting(0, "default per-site limit on memory bytes held by its slices (0: none)")
    slice_max_nodes: int = setting(0, "default limit on slivers in one slice (0: none)")
    renew_min_description: int = setting(20, "a slice is renewed only if its description has at least this many characters, as PlanetLab asked")
    log_level: str = setting("info", "debug, info, warning or error")
