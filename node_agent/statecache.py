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
SLIVERS_MARK = "\x00slivers"  # where the slivers' texts go in the document (no JSON text contains it)


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
        self._made_dir = False
        #: each desired sliver's JSON text, with the spec it was made from: a set differs from
        #: the one before by a sliver or two, and encoding all of them at every save was most
        #: of a save's cost (a simulated machines' host saves hundreds of sets a second)
        self._texts: dict[str, tuple[SliverSpec, str]] = {}

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
        if not self._made_dir:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._made_dir = True
        doc = {
            "slivers": SLIVERS_MARK,  # first: the mark's first occurrence is this one, whatever the rest holds
            "generation": cached.generation,
            "cluster": cached.cluster,
            "orphans": [s.to_wire() for s in cached.orphans.values()],
            "restarts": cached.restarts,
            "peers": [to_wire(p) for p in cached.peers],
            "open_slices": cached.open_slices,
        }
        texts = {sid: self._text(spec) for sid, spec in cached.desired.items()}
        self._texts = {sid: (cached.desired[sid], text) for sid, text in texts.items()}
        head, _, tail = json.dumps(doc).partition(json.dumps(SLIVERS_MARK))
        data = "".join((head, "[", ", ".join(texts.values()), "]", tail)).encode()
        # Sliver environments hold the slices' secrets: the cache is for root's eyes only.
        if self.fsync:
            write_atomic(self.path, data, mode=0o600)
        else:  # a simulated machine's: written on the scratch thread, never waited for here
            SCRATCH.put(self.path, data, mode=0o600)

    def _text(self, spec: SliverSpec) -> str:
        kept = self._texts.get(spec.id)
        return kept[1] if kept is not None and (kept[0] is spec or kept[0] == spec) else json.dumps(spec.to_wire())
