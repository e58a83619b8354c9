"""The agent's on-disk cache of its last desired set, so slivers outlive the controller."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from slices.errors import ProtocolError
from slices.model import SliverSpec
from slices.statefile import write_atomic

log = logging.getLogger(__name__)


class DesiredCache:
    def __init__(self, state_dir: Path | None, *, fsync: bool = True) -> None:
        self.path = state_dir / "desired.json" if state_dir is not None else None
        self.fsync = fsync

    def load(self) -> tuple[int, dict[str, SliverSpec]] | None:
        """The cached (generation, desired set); None when the file cannot be read.

        None is not "nothing desired": the agent then waits for the controller's set before it
        destroys anything, so a truncated or foreign file never costs a running sliver.
        """
        if self.path is None or not self.path.exists():
            return 0, {}
        try:
            doc = json.loads(self.path.read_text())
            slivers = [SliverSpec.from_wire(s) for s in doc.get("slivers", [])]
            generation = int(doc.get("generation", 0))
        except (OSError, ValueError, TypeError, AttributeError, ProtocolError) as exc:
            log.error("%s is unreadable (%s); keeping every sliver until the controller resends the desired set", self.path, exc)
            return None
        return generation, {s.id: s for s in slivers}

    def save(self, generation: int, slivers: dict[str, SliverSpec]) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        doc = {"generation": generation, "slivers": [s.to_wire() for s in slivers.values()]}
        write_atomic(self.path, json.dumps(doc).encode(), fsync=self.fsync)
