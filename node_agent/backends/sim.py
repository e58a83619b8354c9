"""The ``sim`` backend: accounting only, for scale runs and nodes that cannot run guests.

A simulated sliver is a record on a simulated machine: nothing is isolated and no process
runs. ``slicemesh nodes`` shows ``sim`` next to each isolation kind it serves, so nobody
mistakes one for a real container or VM. Usage is synthetic but stable: a fixed fraction of
the quota per sliver (from a hash of its id), with CPU seconds growing at that rate.
"""

from __future__ import annotations

import builtins
import functools
import hashlib
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

from node_agent.backends.base import BackendError, ExecUnsupported
from node_agent.backends.execio import ExecStdin, Terminal
from slices import faults
from slices.isolation import ISOLATIONS
from slices.model import SliverSpec, SliverStatus, Usage
from slices.statefile import SCRATCH, read_scratch

SIM_IMAGES = ["busybox", "host", "debian"]

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1 << 16)
def _fraction(sliver_id: str) -> float:
    return 0.2 + 0.6 * (hashlib.blake2s(sliver_id.encode(), digest_size=2).digest()[0] / 255)


class SimBackend:
    name = "sim"

    def __init__(self, state_file: Path | None = None, *, kinds: frozenset[str] = frozenset(ISOLATIONS), images: list[str] | None = None) -> None:
        self.kinds = kinds
        self._images = list(images) if images else list(SIM_IMAGES)
        self.state_file = state_file
        self.slivers: dict[str, dict[str, object]] = {}
        #: the status last made per sliver, given again while its state is the same: a host's
        #: machines ask every sliver's status at every reconcile and refresh
        self._statuses: dict[str, SliverStatus] = {}
        #: each record's JSON text as last written, dropped when it changes: a flush writes
        #: every record, and encoding all of them at each was most of its cost
        self._texts: dict[str, str] = {}
        self._dirty = False
        if state_file is not None:
            try:
                raw = read_scratch(state_file)
                if raw is not None:
                    self.slivers = dict(json.loads(raw))
            except (OSError, ValueError, TypeError) as exc:  # a damaged record: the controller resends what ran here
                log.error("%s is unreadable (%s); this simulated machine starts with no slivers", state_file, exc)
                self.slivers = {}

    def _save(self, sliver_id: str) -> None:
        self._texts.pop(sliver_id, None)
        self._dirty = True

    def network_changed(self) -> None:
        """Simulated slivers have no network."""

    def flush(self) -> None:
        """One write per reconcile at most, not one per sliver, on the scratch thread."""
        if self._dirty and self.state_file is not None:
            texts = self._texts
            for sid, rec in self.slivers.items():
                if sid not in texts:
                    texts[sid] = f"{json.dumps(sid)}: {json.dumps(rec)}"
            SCRATCH.put(self.state_file, ("{" + ", ".join(texts[sid] for sid in self.slivers) + "}").encode())
        self._dirty = False

    def images(self) -> list[str]:
        return list(self._images)

    def facts(self) -> dict[str, str]:
        return {}

    def self_check(self) -> str | None:
        """Accounting only: nothing on the host to check."""
        return None

    def create(self, spec: SliverSpec) -> SliverStatus:
        if spec.isolation not in self.kinds:
            raise BackendError(f"sim backend here does not serve {spec.isolation}")
        if spec.image not in self._images:
            raise BackendError(f"image {spec.image!r} is not offered here")
        if spec.id not in self.slivers:
            self.slivers[spec.id] = {"state": "running", "started": time.time(), "cpu": spec.cpu, "memory": spec.memory}
            self._save(spec.id)
            faults.hit("agent.create.mid")  # made in memory, not yet in its state file
        return self.status(spec.id)

    def start(self, sliver_id: str) -> SliverStatus:
        rec = self._get(sliver_id)
        if rec["state"] != "running":
            rec["state"], rec["started"] = "running", time.time()
            self._save(sliver_id)
        return self.status(sliver_id)

    def stop(self, sliver_id: str) -> SliverStatus:
        rec = self._get(sliver_id)
        rec["state"] = "stopped"
        self._save(sliver_id)
        return self.status(sliver_id)

    def destroy(self, sliver_id: str) -> None:
        self._statuses.pop(sliver_id, None)
        if self.slivers.pop(sliver_id, None) is not None:
            self._save(sliver_id)
            faults.hit("agent.destroy.mid")  # gone in memory, still in its state file

    def status(self, sliver_id: str) -> SliverStatus:
        rec = self.slivers.get(sliver_id)
        if rec is None:
            return SliverStatus(sliver_id, "lost", "not on this node")
        state = rec["state"]
        st = self._statuses.get(sliver_id)
        if st is None or st.state != state:
            st = self._statuses[sliver_id] = SliverStatus(sliver_id, str(state), None if state == "running" else "stopped by the agent")
        return st

    def usage(self, sliver_id: str) -> Usage:
        rec = self._get(sliver_id)
        f = _fraction(sliver_id)
        cores = float(rec["cpu"]) * f if rec["state"] == "running" else 0.0  # type: ignore[arg-type]
        memory = int(int(rec["memory"]) * f)  # type: ignore[call-overload]
        return Usage(cpu_seconds=cores * max(0.0, time.time() - float(rec["started"])), cpu_cores=cores, memory=memory, memory_peak=memory, pids=3)  # type: ignore[arg-type]

    def exec(self, sliver_id: str, argv: list[str], timeout: float, stdin: ExecStdin | None = None, tty: Terminal | None = None) -> Iterator[tuple[str, bytes]]:
        raise ExecUnsupported("simulated slivers run no processes: use a real backend (--backend real)")

    def logs(self, sliver_id: str, offset: int | None, limit: int) -> tuple[bytes, int]:
        raise ExecUnsupported("simulated slivers produce no output: use a real backend (--backend real)")

    def close(self) -> None:
        self.flush()
        SCRATCH.flush()

    def list(self) -> builtins.list[SliverStatus]:
        return [self.status(sid) for sid in sorted(self.slivers)]

    def _get(self, sliver_id: str) -> dict[str, object]:
        rec = self.slivers.get(sliver_id)
        if rec is None:
            raise BackendError(f"no sliver {sliver_id} here")
        return rec
