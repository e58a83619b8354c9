"""The agent's on-disk cache of its last desired set, so slivers outlive the controller."""

from __future__ import annotations

import json
from pathlib import Path

from slices.model import SliverSpec
from slices.statefile import write_atomic


class DesiredCache:
    def __init__(self, state_dir: Path | None, *, fsync: bool = True) -> None:
        self.path = state_dir / "desired.json" if state_dir is not None else None
        self.fsync = fsync

    def load(self) -> tuple[int, dict[str, SliverSpec]]:
        if self.path is None or not self.path.exists():
            return 0, {}
        doc = json.loads(self.path.read_text())
        slivers = [SliverSpec.from_wire(s) for s in doc.get("slivers", [])]
        return int(doc.get("generation", 0)), {s.id: s for s in slivers}

    def save(self, generation: int, slivers: dict[str, SliverSpec]) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        doc = {"generation": generation, "slivers": [s.to_wire() for s in slivers.values()]}
        write_atomic(self.path, json.dumps(doc).encode(), fsync=self.fsync)
