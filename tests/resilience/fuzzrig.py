"""What the fuzz tests need around the generator: a daemon as a real process whose memory is
watched, a dump of the controller's SQLite tables, and the set of connections that send.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psutil
import zmq

from benchmarks.common import stop_process
from slices.catalogue import builtin_catalogue
from slices.codec import decode, encode
from slices.errors import ProtocolError
from slices.protocol import Beat, Desired, Error, Heartbeat, Message, Ok, Ping, Register, Report, build
from slices.simcluster import sim_nodes
from slices.transport import ClientKeys, Dealer, Router, new_keypair
from slices.wire import to_wire
from tests.conftest import wait_for

ROOT = Path(__file__).resolve().parents[2]
MiB = 1 << 20


class Daemon:
    """A slicemesh daemon in its own process (so its RSS is its own), logging to a file, its
    resident memory sampled every 20 ms from ``watch()`` on."""

    def __init__(self, argv: Sequence[str], log: Path) -> None:
        self.log = log
        self._out = log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-X", "faulthandler", *argv], cwd=ROOT, stdout=self._out, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.ps = psutil.Process(self.proc.pid)
        self.baseline = self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def rss(self) -> int:
        return int(self.ps.memory_info().rss)

    def watch(self) -> None:
        self.baseline = self.peak = self.rss()

        def sample() -> None:
            while not self._stop.wait(0.02):
                try:
                    self.peak = max(self.peak, self.rss())
                except psutil.Error:
                    return

        self._thread = threading.Thread(target=sample, name="rss", daemon=True)
        self._thread.start()

    def growth(self) -> int:
        """Peak RSS while watched, over the baseline, in bytes."""
        self.peak = max(self.peak, self.rss())
        return self.peak - self.baseline

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_problems(self) -> list[str]:
        """Lines that say the daemon met something it did not expect."""
        text = self.log.read_text(errors="replace")
        bad = ("Traceback", "loop turn failed", "failed; serving on", "handling", "internal")
        return [line for line in text.splitlines() if any(b in line for b in bad)][:20]

    def log_lines(self) -> int:
        return len(self.log.read_text(errors="replace").splitlines())

    def stop(self) -> None:
        self._stop.set()
        stop_process(self.proc)
        self._out.close()


def start_controller(tmp: Path) -> tuple[Daemon, str]:
    ready = tmp / "controller.url"
    argv = [
        "-m",
        "slices.cli",
        "controller",
        "--listen",
        "tcp://127.0.0.1:*",
        "--db",
        str(tmp / "c.db"),
        "--keys-dir",
        str(tmp / "keys"),
        "--ready-file",
        str(ready),
        "--heartbeat-period",
        "1.0",  # a liveness window of 3 s: a loaded machine must not make a node flap (the store would change)
    ]
    daemon = Daemon(argv, tmp / "controller.log")
    wait_for(lambda: ready.exists() or not daemon.alive(), timeout=30, what="the controller to start")
    assert daemon.alive(), daemon.log.read_text()
    return daemon, ready.read_text().strip()


def dump_tables(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, read through a second connection (the store runs in WAL mode)."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        names = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        return {n: sorted(con.execute(f'SELECT * FROM "{n}"').fetchall(), key=repr) for n in names}
    finally:
        con.close()


class Senders:
    """Named connections that send hostile frames and read (and count) whatever comes back."""

    def __init__(self) -> None:
        self.dealers: dict[str, Dealer] = {}
        self.raw: dict[str, Any] = {}
        self.replies: dict[str, int] = {}

    def dealer(self, name: str, url: str, keys: ClientKeys) -> None:
        self.dealers[name] = Dealer(url, f"fuzz:{name}", keys)
        self.replies[name] = 0

    def plaintext(self, name: str, url: str, server_key: str | None = None) -> None:
        """A DEALER without CURVE, or (``server_key``) with a key pair the server never saw
        and the wrong idea of the server's key."""
        s = zmq.Context.instance().socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.SNDHWM, 100_000)
        if server_key is not None:
            public, secret = zmq.curve_keypair()
            s.setsockopt(zmq.CURVE_SERVERKEY, server_key.encode())
            s.setsockopt(zmq.CURVE_PUBLICKEY, public)
            s.setsockopt(zmq.CURVE_SECRETKEY, secret)
        s.connect(url)
        self.raw[name] = s
        self.replies[name] = 0

    def send(self, name: str, frames: list[bytes]) -> None:
        sock = self.dealers[name].sock if name in self.dealers else self.raw[name]
        try:
            sock.send_multipart(frames, zmq.NOBLOCK)
        except zmq.Again:
            pass  # a peer that does not handshake (plaintext, wrong key) queues until its HWM

    def ping(self, name: str, msg_id: str, timeout: float = 30) -> None:
        """Send ``name``'s connection a ping and wait for its pong, counting what comes before
        it: the controller has then handled everything that connection sent earlier."""
        d = self.dealers[name]
        d.send(encode(Ping(), id=msg_id, sender="fuzz"))

        def answered() -> bool:
            d.wait(0.1)
            for frame in iter(d.recv, None):
                self.replies[name] += 1
                if decode(frame).id == msg_id:
                    return True
            return False

        wait_for(answered, timeout=timeout, what=f"{name}'s ping {msg_id} to be answered")

    def drain(self) -> None:
        for name, d in self.dealers.items():
            while d.recv() is not None:
                self.replies[name] += 1
        for name, s in self.raw.items():
            while s.poll(0):
                s.recv_multipart()
                self.replies[name] += 1

    def close(self) -> None:
        for d in self.dealers.values():
            d.close()
        for s in self.raw.values():
            s.close(0)


def raw_tcp_garbage(url: str, payloads: Sequence[bytes]) -> None:
    """Bytes on the port below ZeroMQ: each payload on its own TCP connection."""
    import socket

    host, port = url.removeprefix("tcp://").rsplit(":", 1)
    for data in payloads:
        with socket.create_connection((host, int(port)), timeout=2) as s:
            try:
                s.sendall(data)
                s.settimeout(0.05)
                s.recv(64)
            except OSError:
                pass


class FakeController:
    """An agent's only peer: a ROUTER holding the controller's key, playing the controller well
    enough (welcome, heartbeats, one desired sliver) and recording the real frames both ways.
    The agent runs as a process hosting one simulated node."""

    sliver = "fz-web-0001"

    def __init__(self, tmp: Path, secret: str = "fz-not-to-be-seen") -> None:
        self.keys, self.agent_keys = new_keypair(), new_keypair()
        self.router = Router("tcp://127.0.0.1:*", self.keys, lambda k: k == self.agent_keys.public)
        self.node = sim_nodes(builtin_catalogue(), 1, "sim")[0]
        self.peer: bytes | None = None
        self.captured: list[bytes] = []
        self.replies: dict[str, Message] = {}
        self.statuses: dict[str, str] = {}
        self.heartbeats = 0
        sliver = {"id": self.sliver, "slice": "fz-web", "isolation": "container", "image": "busybox", "resources": {"cpu": 0.1, "memory": 64 * MiB, "disk": 0}}
        self.desired = {"generation": 1, "slivers": [{**sliver, "env": {"TOKEN": secret}}], "part": 0, "parts": 1}
        self.current = build(Desired.TYPE, self.desired)
        nodes, keys = tmp / "nodes.json", tmp / "agent-keys.json"
        nodes.write_text(json.dumps([self.node]))
        keys.write_text(json.dumps({"server": self.keys.public, "agents": {self.node["name"]: [self.agent_keys.public, self.agent_keys.secret]}}))
        self.state_dir = tmp / "agent-state"
        argv = ["-m", "node_agent.simhost", "--controller", self.router.url, "--nodes", str(nodes), "--keys", str(keys)]
        self.daemon = Daemon([*argv, "--state-dir", str(self.state_dir), "--heartbeat-period", "0.5", "--log-level", "info"], tmp / "agent.log")

    def send(self, payload: bytes) -> None:
        assert self.peer is not None
        self.captured.append(payload)
        self.router.send(self.peer, payload)

    def send_raw(self, frames: list[bytes]) -> None:
        assert self.peer is not None
        self.router.sock.send_multipart([self.peer, *frames])

    def serve(self) -> None:
        """Answer whatever the agent sent (without blocking)."""
        while (got := self.router.recv()) is not None:
            peer, frames, _, _ = got
            env = decode(frames[0])
            self.captured.append(frames[0])
            msg = env.msg
            if isinstance(msg, (Register, Heartbeat)):
                self.peer = peer
                self.heartbeats += isinstance(msg, Heartbeat)
                self.send(encode(Ok(to_wire(Beat(generation=1, period=0.5, misses=3, cluster="fz-cluster"))), id=env.id, sender="controller"))
                if isinstance(msg, Register):
                    self.send(encode(self.current, id="g1.0", sender="controller"))
            if isinstance(msg, (Register, Heartbeat, Report)):
                self.statuses.update({s.id: s.state for s in msg.slivers})
            if isinstance(msg, (Ok, Error)):
                self.replies[env.id] = msg

    def wait(self, cond: Callable[[], object], what: str, timeout: float = 20) -> None:
        def check() -> bool:
            self.serve()
            if cond():
                return True
            self.router.sock.poll(50)
            return False

        wait_for(check, timeout=timeout, what=what)

    def instruction(self, frame: bytes) -> bool:
        """Whether a generated frame is a valid order to change the node's desired set: a
        holder of the controller's key may give one (that is what the key is for), so the fuzz
        leaves those out."""
        try:
            msg = decode(frame).msg
        except ProtocolError:
            return False
        return isinstance(msg, Desired) and msg.generation >= self.current.generation and msg != self.current  # type: ignore[attr-defined]

    def close(self) -> None:
        self.daemon.stop()
        self.router.close()


def state_files(root: Path) -> dict[str, bytes]:
    """Every file below ``root``, by relative path."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
