"""Moving a running sliver between two nodes: what the controller tells each node, and what
each node reports back (the records only; docs/migration.md has the whole sequence).

A move has a **kind**: ``live`` (strong mobility: a VM's memory, devices and disk move with
QEMU's pre-copy migration, and the guest resumes where it was) or ``cold`` (a container,
where CRIU is unavailable: it stops, its disk moves, it starts again on the new node, so its
files survive and its memory does not). Both go the same way:

1. the controller adds the sliver to the target node's desired set with ``Migration(role="in")``;
   the target prepares (an incoming QEMU, or a receiver for the disk) and reports the TCP port
   it listens on (``MigrationReport(phase="listening", port=...)``);
2. the controller tells the source ``Migration(role="out", endpoint=<target's address>:<port>)``
   (and for a VM ``disk_endpoint``, where the target serves its disk), where the address is
   the one the target's connection comes from (never one it claims);
3. the source sends (QEMU ``migrate``, or the disk image), and reports what it cost;
4. the target runs the sliver: the move completes, the source's copy is destroyed.

A one-time ``token`` (from the controller, to both nodes) is what the receiver of a cold move
accepts; QEMU's own stream has none and is accepted once, from the first peer (see
docs/migration.md on what that means for the network between agents).
"""

from __future__ import annotations

from dataclasses import dataclass

from slices.units import format_bytes
from slices.wire import fld

MOVE_KINDS = ("live", "cold")
ROLES = ("in", "out")
PHASES = ("listening", "sending", "receiving", "sent", "received", "failed")
ENDPOINT = r"[0-9.]{7,15}:[0-9]{1,5}"
TOKEN = r"[0-9a-f]{32}"


@dataclass(frozen=True)
class MoveOptions:
    """Tuning a researcher may ask of a live migration (QEMU migration capabilities)."""

    auto_converge: bool = False  # throttle the guest's vCPUs when it dirties memory faster than it moves
    xbzrle: bool = False  # send pages that changed as XOR-compressed deltas of what was sent
    downtime_ms: int = fld(300, lo=1, hi=60_000)  # QEMU's downtime-limit (its default: 300 ms)
    timeout: float = fld(600.0, lo=1.0, hi=86_400.0)  # give up (and keep the sliver where it ran) after this


@dataclass(frozen=True)
class Migration:
    """One node's part in a move in progress, as the controller derives it for that node."""

    role: str = fld(pattern="|".join(ROLES))
    kind: str = fld(pattern="|".join(MOVE_KINDS))
    token: str = fld(pattern=TOKEN)
    peer: str = fld(max_len=128)  # the other node's name, for messages
    endpoint: str | None = fld(None, pattern=ENDPOINT)  # role "out": where the target listens
    disk_endpoint: str | None = fld(None, pattern=ENDPOINT)  # role "out", live: the target's disk export (NBD)
    options: MoveOptions = fld(factory=MoveOptions)


@dataclass(frozen=True)
class MigrationReport:
    """What a node says about its part in a move (optional in ``SliverStatus``)."""

    phase: str = fld(pattern="|".join(PHASES))
    kind: str = fld(pattern="|".join(MOVE_KINDS))
    port: int = fld(0, lo=0, hi=65535)  # "listening": the TCP port the target waits on
    disk_port: int = fld(0, lo=0, hi=65535)  # "listening", live: where the target serves its disk (NBD)
    reason: str | None = fld(None, kind="text", max_len=512)
    total_ms: float = fld(0.0, lo=0, hi=1e9)
    downtime_ms: float = fld(0.0, lo=0, hi=1e9)  # live: QEMU's measure; cold: stopped until sent
    bytes: int = fld(0, lo=0, hi=1 << 62)  # on the wire
    ram_bytes: int = fld(0, lo=0, hi=1 << 62)  # live: RAM transferred
    disk_bytes: int = fld(0, lo=0, hi=1 << 62)  # disk data (not holes) transferred
    dirty_rate: float = fld(0.0, lo=0, hi=1e12)  # live: pages dirtied per second, last measured
    passes: int = fld(0, lo=0, hi=1 << 31)  # live: dirty-memory sync passes
    address_changed: bool = False  # the sliver's address is the target node's now

    def summary(self) -> str:
        """One line for ``show`` and the slice's history."""
        if self.kind == "live":
            return (
                f"live migration: {self.total_ms / 1000:.2f} s, downtime {self.downtime_ms:.0f} ms, "
                f"{format_bytes(self.bytes)} sent (RAM {format_bytes(self.ram_bytes)}, disk {format_bytes(self.disk_bytes)}), "
                f"{self.passes} passes, dirty rate {self.dirty_rate:.0f} pages/s"
            )
        return (
            f"cold move (its files moved, its processes started again: containers cannot move live without CRIU): "
            f"{self.total_ms / 1000:.2f} s, stopped for {self.downtime_ms / 1000:.2f} s, {format_bytes(self.bytes)} of disk sent"
        )


__all__ = ["MOVE_KINDS", "Migration", "MigrationReport", "MoveOptions"]
