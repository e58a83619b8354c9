"""Reaching a running ``slicemesh sim`` from another terminal: ``slicemesh sim fail|restore|status``.

The simulation writes a run file (``sim.json`` in its state directory, and a copy under the
CLI's config directory, ``sims/<pid>.json``, so it is found without knowing where its state
is) naming a Unix socket in the abstract namespace (no file to leave behind, no path-length
limit). A request is one JSON line, the reply one JSON line; the simulation answers between
its checks for failed machines, so nothing runs concurrently with its own bookkeeping.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import selectors
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slices import identity
from slices.errors import SliceMeshError
from slices.statefile import write_atomic_text

if TYPE_CHECKING:
    from slices.simcluster import SimCluster

log = logging.getLogger(__name__)

RUN_FILE = "sim.json"
MAX_REQUEST = 4096
UP_TIMEOUT = 30.0


def registry_dir() -> Path:
    return identity.config_dir() / "sims"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ControlServer:
    """The running simulation's end: run files written on entry, removed on exit."""

    def __init__(self, cluster: SimCluster) -> None:
        self.cluster = cluster
        self.name = f"slicemesh-sim-{os.getpid()}-{secrets.token_hex(4)}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind("\0" + self.name)
        self.sock.listen(8)
        self.sock.setblocking(False)
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.sock, selectors.EVENT_READ)
        self.files = [cluster.dir / RUN_FILE, registry_dir() / f"{os.getpid()}.json"]

    def __enter__(self) -> ControlServer:
        doc = {"pid": os.getpid(), "url": self.cluster.url, "user_url": self.cluster.user_url, "state_dir": str(self.cluster.dir), "control": self.name, "nodes": len(self.cluster.nodes)}
        for path in self.files:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic_text(path, json.dumps(doc))
        return self

    def __exit__(self, *exc: object) -> None:
        for path in self.files:
            path.unlink(missing_ok=True)
        self.selector.close()
        self.sock.close()

    def serve(self, timeout: float, say: Callable[[str], None]) -> None:
        """Answer the requests that arrive within ``timeout`` seconds."""
        for _ in self.selector.select(timeout):
            with contextlib.suppress(BlockingIOError):
                conn, _addr = self.sock.accept()
                with conn:
                    self._answer(conn, say)

    def _answer(self, conn: socket.socket, say: Callable[[str], None]) -> None:
        conn.settimeout(5.0)
        try:
            raw = conn.makefile("rb").readline(MAX_REQUEST)
            reply = self.handle(json.loads(raw), say)
        except (OSError, ValueError) as exc:
            reply = {"ok": False, "error": f"unreadable request: {exc}"}
        with contextlib.suppress(OSError):
            conn.sendall(json.dumps(reply).encode() + b"\n")

    def handle(self, req: Any, say: Callable[[str], None]) -> dict[str, Any]:
        """One request -> one reply; nothing a request holds stops the simulation."""
        if not isinstance(req, dict) or req.get("op") not in ("fail", "restore", "status"):
            return {"ok": False, "error": "a request is {op: fail|restore|status, node: NAME}"}
        machines = self.cluster.machines
        try:
            if req["op"] == "status":
                return {"ok": True, "url": self.cluster.url, "user_url": self.cluster.user_url, "failed": machines.failed, "pids": machines.pids()}
            node = str(req.get("node", ""))
            if req["op"] == "fail":
                out = machines.fail(node)
                message = f"node {node} failed: {out['how']}"
            else:
                out = machines.restore(node)
                up = self.wait_up(node)
                message = f"node {node} restored: agent process {out['pid']}, {'up' if up else f'not up yet after {UP_TIMEOUT:.0f} s'}"
        except SliceMeshError as exc:
            return {"ok": False, "error": exc.reason}
        except Exception as exc:  # a bug here must not end the simulation
            log.exception("sim %s %s failed", req.get("op"), req.get("node"))
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        say(message)
        return {"ok": True, "message": message, **out}

    def wait_up(self, node: str) -> bool:
        deadline = time.monotonic() + UP_TIMEOUT
        with self.cluster.client(timeout=10) as c:
            while time.monotonic() < deadline:
                if any(n["name"] == node and n["state"] == "up" for n in self.cluster.node_list(c)):
                    return True
                time.sleep(0.1)
        return False


# ---- the other terminal -----------------------------------------------------------------------


def find(state_dir: str | None) -> dict[str, Any]:
    """The run file of the simulation meant: the one in ``state_dir``, or the only one running."""
    if state_dir is not None:
        path = Path(state_dir) / RUN_FILE
        try:
            doc: dict[str, Any] = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise SliceMeshError(f"no running simulation in {state_dir} ({path}: {getattr(exc, 'strerror', None) or exc})") from None
        if not _alive(int(doc.get("pid", 0))):
            raise SliceMeshError(f"the simulation that wrote {path} (pid {doc.get('pid')}) is no longer running")
        return doc
    running = []
    for path in sorted(registry_dir().glob("*.json")) if registry_dir().is_dir() else []:
        with contextlib.suppress(OSError, ValueError):
            doc = json.loads(path.read_text())
            if _alive(int(doc.get("pid", 0))):
                running.append(doc)
    if not running:
        raise SliceMeshError("no running `slicemesh sim` found (start one, or name its --state-dir)")
    if len(running) > 1:
        which = "; ".join(f"pid {d['pid']}, state dir {d['state_dir']}" for d in running)
        raise SliceMeshError(f"{len(running)} simulations are running ({which}): choose one with --state-dir")
    return running[0]


def request(sim: dict[str, Any], doc: dict[str, Any], timeout: float = 60.0) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect("\0" + str(sim["control"]))
            s.sendall(json.dumps(doc).encode() + b"\n")
            line = s.makefile("rb").readline(1 << 20)
        except OSError as exc:
            raise SliceMeshError(f"the simulation (pid {sim['pid']}) did not answer: {exc.strerror or exc}") from None
    try:
        reply: dict[str, Any] = json.loads(line)
    except ValueError:
        raise SliceMeshError(f"the simulation (pid {sim['pid']}) closed the connection without an answer") from None
    if not reply.get("ok"):
        raise SliceMeshError(str(reply.get("error", "refused")))
    return reply


def status_text(reply: dict[str, Any]) -> str:
    pids: dict[str, int] = reply["pids"]
    failed: dict[str, str] = reply["failed"]
    lines = [f"controller: {reply['url']}", f"{len(pids)} nodes running in {len(set(pids.values()))} processes"]
    lines += [f"failed: {name}: {why}" for name, why in sorted(failed.items())] or ["no failed nodes"]
    return "\n".join(lines)
