"""The processes that host ``slicemesh sim``'s simulated machines, and their failures.

A host process runs many machines' agents. When one dies (killed, crashed, out of memory),
its machines have failed as real machines fail: the controller finds them ``down`` and heals
their slices, and the simulation serves on. ``fail`` makes one machine fail on purpose as a
machine's agent dies: SIGKILL of its process when it runs alone there (as every restored
machine does), else its agent alone ends as a crash ends it (no goodbye, its slivers left as
they are) and the others that process runs serve on. ``restore`` starts a failed machine again,
in a process of its own, over the same state directory, so it re-adopts what it ran.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from slices.errors import SliceMeshError

if TYPE_CHECKING:
    from slices.simcluster import SimCluster


@dataclass
class HostProc:
    """One host process and the machines it runs."""

    names: list[str]
    proc: subprocess.Popen[bytes]


@dataclass(frozen=True)
class Death:
    """Machines that failed together because their process ended."""

    names: list[str]
    pid: int
    code: int

    def text(self) -> str:
        how = f"killed by {signal.Signals(-self.code).name}" if self.code < 0 else f"exit code {self.code}"
        return f"nodes failed: {', '.join(self.names)} (their agent process {self.pid} ended, {how}); `slicemesh sim restore NODE` starts one again"


class SimHosts:
    """Which process runs which machine; spawning, noticing deaths, failing and restoring."""

    def __init__(self, cluster: SimCluster) -> None:
        self.cluster = cluster
        self.by_name = {n["name"]: n for n in cluster.nodes}
        self.position = {n["name"]: k for k, n in enumerate(cluster.nodes)}
        self.groups: list[HostProc] = []
        self.failed: dict[str, str] = {}  # name -> why
        self._spawned = 0

    def start_all(self) -> None:
        nodes, per = self.cluster.nodes, self.cluster.per_process
        for k in range(0, len(nodes), per):
            self.spawn([n["name"] for n in nodes[k : k + per]])

    def spawn(self, names: list[str]) -> HostProc:
        """A host process for ``names`` (each keeps its position: its subnet and uid block)."""
        c = self.cluster
        assert c.identity is not None, "start the controller first"
        tag = self._spawned
        self._spawned += 1
        spec = c.dir / f"agents-{tag}.json"
        spec.write_text(json.dumps([self.by_name[n] for n in names]))
        keys = c.dir / f"agents-{tag}.keys.json"
        doc = {"server": c.identity.server_key, "agents": {n: [c.agent_keys[n].public, c.agent_keys[n].secret] for n in names}}
        fd = os.open(keys, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f)
        positions = ",".join(str(c.first_subnet + self.position[n]) for n in names)
        args = ["-m", "node_agent.simhost", "--controller", c.url, "--nodes", str(spec), "--keys", str(keys), "--backend", c.backend, "--log-level", c.log_level]
        args += ["--heartbeat-period", str(c.heartbeat_period), "--prefix", c.prefix, "--positions", positions, "--control-stdin"]
        if c.agent_state:
            args += ["--state-dir", str(c.dir / "agents")]
        if c.agents_nice > 0:
            args += ["--nice", str(c.agents_nice)]
        group = HostProc(list(names), c.spawn(args, f"agents-{tag}.log", control=True))
        self.groups.append(group)
        for n in names:
            self.failed.pop(n, None)
        return group

    def procs(self) -> list[subprocess.Popen[bytes]]:
        return [g.proc for g in self.groups]

    def pids(self) -> dict[str, int]:
        """Each running machine's host process id (``slicemesh sim status`` shows them)."""
        return {n: g.proc.pid for g in self.groups for n in g.names}

    def reap(self) -> list[Death]:
        """Host processes that ended since the last look: their machines are now failed."""
        deaths = []
        for g in list(self.groups):
            code = g.proc.poll()
            if code is None:
                continue
            self.groups.remove(g)
            self.cluster.forget(g.proc)
            for n in g.names:
                self.failed[n] = f"its agent process {g.proc.pid} ended (code {code})"
            deaths.append(Death(g.names, g.proc.pid, code))
        return deaths

    def _group_of(self, name: str) -> HostProc:
        if name not in self.by_name:
            raise SliceMeshError(f"no simulated node {name!r} in this simulation")
        if name in self.failed:
            raise SliceMeshError(f"{name} has already failed ({self.failed[name]}); `slicemesh sim restore {name}` starts it again")
        for g in self.groups:
            if name in g.names:
                return g
        raise SliceMeshError(f"{name} runs in no process of this simulation")  # pragma: no cover - bookkeeping bug

    def fail(self, name: str) -> dict[str, Any]:
        """End ``name``'s agent without a goodbye: SIGKILL of its process when it runs alone
        there, else a ``crash`` command to the process (the others it runs serve on).

        Not SIGKILL plus a restart of the others: the controller refuses a second connection
        for a node whose first still looks alive, so they would all be down for a liveness
        timeout and their slivers could be moved."""
        g = self._group_of(name)
        if len(g.names) == 1:
            g.proc.send_signal(signal.SIGKILL)
            g.proc.wait(timeout=30)
            self.groups.remove(g)
            self.cluster.forget(g.proc)
            how = f"its agent process {g.proc.pid} was killed with SIGKILL"
        else:
            assert g.proc.stdin is not None
            try:
                g.proc.stdin.write(f"crash {name}\n".encode())
                g.proc.stdin.flush()
            except OSError as exc:  # the process ended meanwhile: reap() will say so
                raise SliceMeshError(f"the process running {name} ({g.proc.pid}) did not take the command: {exc.strerror or exc}") from None
            g.names.remove(name)
            how = f"its agent in process {g.proc.pid} was ended as a crash ends it; the {len(g.names)} other nodes there serve on"
        self.failed[name] = f"failed on request ({how})"
        return {"node": name, "pid": g.proc.pid, "how": how}

    def restore(self, name: str) -> dict[str, Any]:
        """Start a failed machine again over its state directory (it re-adopts its slivers)."""
        if name not in self.by_name:
            raise SliceMeshError(f"no simulated node {name!r} in this simulation")
        if name not in self.failed:
            raise SliceMeshError(f"{name} has not failed (its agent process is {self.pids()[name]})")
        return {"node": name, "pid": self.spawn([name]).proc.pid}
