"""What the controller holds per slice and per sliver (in memory, written through to the store)."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable, Container
from dataclasses import dataclass, field
from typing import Any

from slices.errors import ProtocolError
from slices.migration import ENDPOINT, MigrationReport, MoveOptions
from slices.model import SliverSpec, Usage
from slices.spec import SliceSpec
from slices.wire import decode, to_wire

ENDPOINT_RE = re.compile(ENDPOINT)


@dataclass(slots=True)
class MovePlan:
    """A move that carries the sliver's state (``slicemesh migrate``; slices/migration.py),
    as opposed to drain's and healing's, which start a fresh copy on the new node."""

    kind: str  # live | cold
    token: str  # the one-time secret both nodes get
    options: MoveOptions
    endpoint: str | None = None  # where the target listens, once its report says
    disk_endpoint: str | None = None  # live moves: where the target serves the VM's disk
    sent: MigrationReport | None = None  # the source's report, once it sent

    def stored(self) -> str:
        return json.dumps({"kind": self.kind, "token": self.token, "options": to_wire(self.options), "endpoint": self.endpoint, "disk_endpoint": self.disk_endpoint})

    @classmethod
    def load(cls, text: str) -> MovePlan | None:
        """From the store; None for a plain make-before-break move (or an unreadable plan)."""
        if not text:
            return None
        try:
            raw = json.loads(text)
            ends = [e if isinstance(e, str) and ENDPOINT_RE.fullmatch(e) else None for e in (raw.get("endpoint"), raw.get("disk_endpoint"))]
            return cls(str(raw["kind"]), str(raw["token"]), decode(MoveOptions, raw["options"], "options"), endpoint=ends[0], disk_endpoint=ends[1])
        except (ValueError, KeyError, TypeError, ProtocolError):
            return None


@dataclass(slots=True)  # no __dict__ per record: thousands of them
class SliverRecord:
    spec: SliverSpec
    node: str
    request: int
    state: str = "pending"
    reason: str | None = "waiting for the node agent"
    usage: Usage | None = None
    moves: int = 0  # times it was moved to another node
    restarts: int = 0  # restarts in a row on its node, as the agent reports
    #: A move in progress (drain: make-before-break): the new copy runs on ``moving_to`` and
    #: the old one keeps running until it does; both nodes hold its reservation meanwhile.
    moving_to: str | None = None
    move_started: float = 0.0
    move_why: str = ""
    move: MovePlan | None = None  # a move that carries state (live or cold); None: a fresh copy starts
    released: bool = False  # it will not run again (exited, or failed for good): it holds nothing
    gave_up: bool = False  # its node spent the restart policy's attempts
    retry_at: float = 0.0  # when healing tries again to re-place it (after a refusal)
    address: str | None = None  # on its node's sliver subnet, as the agent reports (not stored: agents report it again)
    code_note: str | None = None  # how its code reached its node, as the agent reports (not stored)
    row_of: tuple[tuple[object, ...], bytes] | None = field(default=None, repr=False, compare=False)  # (what it shows, its ``show`` row: rows.py)
    kept_of: list[Any] | None = field(default=None, repr=False, compare=False)  # [what they come from, its place and kept fields packed as entries, as values (each once asked for)]: rows.py

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def outlook(self) -> str:
        """Its state as its slice counts it: a failed sliver that its node will restart, or
        that the controller will move (with no refusal yet), is not settled: ``pending``."""
        if self.state != "failed":
            return self.state
        policy = self.spec.restart
        if not self.gave_up and policy.wants_restart("failed") and policy.attempts > 0:
            return "pending"
        if self.gave_up and self.moves < policy.moves and self.retry_at == 0.0:
            return "pending"
        return "failed"


@dataclass(slots=True)  # no __dict__ per record: thousands of them
class SliceRecord:
    spec: SliceSpec
    raw: dict[str, Any]
    owner: str | None
    created: float
    expires: float
    request_id: str | None
    state: str = "pending"
    slivers: list[str] = field(default_factory=list)
    site: str | None = None  # the owner's site: its quota counts this slice
    running: int = 0  # slivers running now, kept as their states change (waits read it)
    pending: int = 0  # slivers pending now, kept the same way (the slice's state without a scan)
    version: int = 0  # the cluster's change counter when this slice last changed

    def counted(self, was: str | None, now: str | None, n: int = 1) -> None:
        """``n`` slivers of this slice went from state ``was`` to ``now`` (None: they were
        not, or are no longer, of its slivers)."""
        self.running += n * ((now == "running") - (was == "running"))
        self.pending += n * ((now == "pending") - (was == "pending"))

    def quick_state(self) -> str | None:
        """The slice's state from its counts when every sliver is running or pending (a
        slice being placed, or running), else None: the slivers must be looked at."""
        if self.slivers and self.running + self.pending == len(self.slivers):
            return "running" if self.pending == 0 else "pending"
        return None

    @property
    def partial(self) -> bool:
        """Placed with fewer slivers than asked for, as ``min_count`` allows."""
        return self.state != "expired" and len(self.slivers) < self.spec.placement.count

    @property
    def name(self) -> str:
        return self.spec.name


def new_sliver_ids(slice_name: str, count: int, taken: Container[str], *, token: Callable[[int], bytes] = secrets.token_bytes) -> list[str]:
    """``count`` fresh sliver ids for a slice: its name and 8 random hex digits, none twice and
    none in ``taken``. 32 random bits alone repeat in about one 10,000-sliver slice in 90 (the
    birthday bound), which made such a create fail on the store's unique id."""
    ids: list[str] = []
    seen: set[str] = set()
    while len(ids) < count:
        want = count - len(ids)
        digits = token(4 * want).hex()
        for k in range(want):
            sid = f"{slice_name}-{digits[8 * k : 8 * k + 8]}"
            if sid not in seen and sid not in taken:
                seen.add(sid)
                ids.append(sid)
    return ids
