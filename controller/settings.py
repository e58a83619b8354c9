"""Controller settings: defaults -> controller.yaml -> SLICEMESH_* -> command line."""

from __future__ import annotations

from dataclasses import dataclass

from slices.settings import setting


@dataclass(frozen=True)
class ControllerSettings:
    listen: str = setting("tcp://*:7700", "ZeroMQ endpoint of the agents' socket (users are answered there too, in turn with the agents)")
    user_listen: str = setting("", "ZeroMQ endpoint of the users' socket, served before the agents' every turn (default: listen's address with the next port, 7701; a random port when listen's is *; off: users share the agents' socket)")
    db: str = setting("/var/lib/slicemesh/controller.db", "SQLite file holding the desired state (WAL mode)")
    new_cluster: bool = setting(False, "start an empty cluster even though the database beside its marker (<db>.cluster) was lost: agents keep their slivers as orphans")
    heartbeat_period: float = setting(1.0, "seconds between heartbeats in a small cluster")
    heartbeat_rate: float = setting(2000.0, "heartbeats per second the controller budgets; the period grows with the cluster (its nodes, or the agents with accepted keys if more) to stay under it")
    liveness_misses: int = setting(3, "missed heartbeats before a node is marked down")
    heartbeat_pulses: int = setting(3, "heartbeats an agent sends as unanswered pulses between two answered ones while it has nothing to report (0: every heartbeat answered); an answer is a third of a heartbeat's CPU on both sides, and agents learn a new period from answers only; at most 100")
    restart_grace: float = setting(10.0, "seconds after the controller starts before a silent node is counted down: agents that lost it come back once libzmq reconnects (its backoff reaches 5 s), and counting them down sooner would mark their slivers lost and move them")
    replace_after: float = setting(3.0, "heartbeat periods a node stays down or stopped before its slivers (of slices that say on_node_failure: replace) are placed elsewhere; a short blip moves nothing")
    max_frame_bytes: int = setting(1024 * 1024, "frames larger than this are logged and dropped")
    code_max_bytes: int = setting(256 * 1024 * 1024, "largest code bundle a slice may bring (slice spec code:), in bytes")
    code_site_max_bytes: int = setting(1024 * 1024 * 1024, "code bundles one site's slices may refer to, in bytes (each distinct bundle counted once)")
    max_reply_bytes: int = setting(32 * 1024 * 1024, "a reply larger than this is refused with too-large (below clients' 64 MiB frame cap, which would drop it unseen); with the per-peer send queue of 1,000 messages it bounds what one peer that never reads can hold")
    lease_check_period: float = setting(1.0, "seconds between checks for expired slices")
    dedupe_entries: int = setting(20_000, "replies remembered so that a retried request is not applied twice")
    step_budget: float = setting(0.01, "seconds per loop turn spent building big replies (a 10,000-row list is built over many turns, so pings and heartbeats never wait behind it)")
    push_bytes_budget: int = setting(32 * 1024 * 1024, "bytes of desired sets sent per loop turn at most (the rest go next turn): a slice's whole address set is ~46 bytes a sliver to each of its nodes, 460 KB a node at 10,000, and one turn must not queue gigabytes in the send buffers")
    batch_budget: float = setting(0.05, "seconds of messages handled per loop turn before the turn goes on to timers, pushes and big replies (what is left is read next turn)")
    keys_dir: str = setting("/var/lib/slicemesh/keys", "the controller's CURVE key pair (controller.key is the public half to give agents and users) and the first admin's identity")
    advertise: str = setting("", "the URL agents reach this controller at; users are told its host with the users' port, in identity files (default: tcp://<hostname>:<port>)")
    max_pending_keys: int = setting(1000, "unaccepted agent keys remembered at most; more are refused until an operator accepts or rejects some")
    unknown_key_rate: float = setting(20.0, "handshakes and requests per second served for keys the controller does not know (enrolment); the rest get no answer")
    site_max_slices: int = setting(10, "default per-site limit on slices (0: none); `slicemesh sites set` overrides it per site")
    site_max_slivers: int = setting(1000, "default per-site limit on slivers in all its slices (0: none)")
    site_max_cpu: float = setting(0.0, "default per-site limit on cores held by its slices (0: none)")
    site_max_memory: int = setting(0, "default per-site limit on memory bytes held by its slices (0: none)")
    slice_max_nodes: int = setting(0, "default limit on slivers in one slice (0: none)")
    renew_min_description: int = setting(20, "a slice is renewed only if its description has at least this many characters, as PlanetLab asked")
    malloc_arena_max: int = setting(2, "glibc malloc arenas at most (0: glibc's default of 8 per core); fewer arenas let the loop reuse what libzmq's threads freed")
    trim_interval: float = setting(10.0, "seconds between returns of freed memory to the system (malloc_trim) at most, each after a burst of messages (0: never)")
    gc_full_interval: float = setting(300.0, "seconds between full collections of Python's cyclic garbage, run from the loop's timer (the loop's longest pause, ~0.2 s at 10,000 nodes); young objects are collected as usual (0: Python's own schedule)")
    trim_after: int = setting(1000, "messages handled since the last return of freed memory that make a burst")
    log_level: str = setting("info", "debug, info, warning or error")
