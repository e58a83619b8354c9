"""The agent's on-disk cache of its last desired set, so slivers outlive the controller.

It also remembers which cluster the set came from, and the orphans: slivers still running
from an earlier cluster whose controller lost its database. Orphans are never destroyed by a
reconcile; only an operator's decision (adopt or destroy, through the controller) ends them.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from slices.errors import ProtocolError
from slices.model import SliverSpec
from slices.protocol import Peer
from slices.statefile import SCRATCH, read_scratch, write_atomic
from slices.wire import decode, to_wire

log = logging.getLogger(__name__)


@dataclass
class Cached:
    generation: int = 0
    desired: dict[str, SliverSpec] = field(default_factory=dict)
    cluster: str = ""  # "" until the first controller reply names it
    orphans: dict[str, SliverSpec] = field(default_factory=dict)
    restarts: dict[str, int] = field(default_factory=dict)  # restarts in a row, per sliver
    #: the last peers and open slices (``Desired``), so isolation holds across agent restarts
    peers: list[Peer] = field(default_factory=list)
    open_slices: list[str] = field(default_factory=list)


class DesiredCache:
    def __init__(self, state_dir: Path | None, *, fsync: bool = True) -> None:
        self.path = state_dir / "desired.json" if state_dir is not None else None
        self.fsync = fsync

    def load(self) -> Cached | None:
        """What was cached; None when the file cannot be read.

        None is not "nothing desired": the agent then waits for the controller's set before it
        destroys anything, so a truncated or foreign file never costs a running sliver.
        """
        if self.path is None:
            return Cached()
        try:
            raw = read_scratch(self.path)
            if raw is None:
                return Cached()
            doc = json.loads(raw)
            slivers = [SliverSpec.from_wire(s) for s in doc.get("slivers", [])]
            orphans = [SliverSpec.from_wire(s) for s in doc.get("orphans", [])]
            restarts = {str(k): int(v) for k, v in dict(doc.get("restarts", {})).items()}
            peers = [decode(Peer, p, "peer") for p in doc.get("peers", [])]
            opened = [str(n) for n in doc.get("open_slices", [])]
            cached = Cached(int(doc.get("generation", 0)), {s.id: s for s in slivers}, str(doc.get("cluster", "")), {s.id: s for s in orphans}, restarts, peers, opened)
        except (OSError, ValueError, TypeError, AttributeError, ProtocolError) as exc:
            log.error("%s is unreadable (%s); keeping every sliver until the controller resends the desired set", self.path, exc)
            return None
        return cached

    def save(self, cached: Cached) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        doc = {
            "generation": cached.generation,
            "cluster": cached.cluster,
            "slivers": [s.to_wire() for s in cached.desired.values()],
            "orphans": [s.to_wire() for s in cached.orphans.values()],
            "restarts": cached.restarts,
            "peers": [to_wire(p) for p in cached.peers],
            "open_slices": cached.open_slices,
        }
        # Sliver environments hold the slices' secrets: the cache is for root's eyes only.
        if self.fsync:
            write_atomic(self.path, json.dumps(doc).encode(), mode=0o600)
        else:  # a simulated machine's: written on the scratch thread, never waited for here
            SCRATCH.put(self.path, json.dumps(doc).encode(), mode=0o600)
