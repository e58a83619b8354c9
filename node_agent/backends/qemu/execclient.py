"""Exec into a VM through its guest agent: one connection per VM, one channel per command.

QEMU lets one client at a time onto a virtio-serial port's socket, while the agent may run
several execs into one VM at once (each on its own thread). So a ``Link`` owns the VM's one
connection and hands frames to whichever exec's channel they belong to. There is no reader
thread: whichever waiting exec finds nobody reading becomes the reader for a short slice,
queues frames for the others and wakes them (leader/follower), so a link costs nothing while
no exec runs and needs no shutdown.

Connecting sends HELLO with a fresh nonce and skips everything until the agent echoes it:
frames left over from a previous connection (an agent that was killed mid-exec) never reach
a new command. Connecting waits for a guest that is still booting, within the exec's deadline.
"""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from node_agent.backends.execio import ExecStdin, start_feeder
from node_agent.backends.qemu import protocol as p

READ_SLICE = 0.2  # seconds one reader holds the socket before letting others look at their deadlines
KILL_GRACE = 2.0  # seconds to wait for EXIT after killing a command at its deadline


class AgentError(Exception):
    pass


class Link:
    """The connection to one VM's guest agent, shared by its concurrent execs."""

    def __init__(self, sock_path: Path) -> None:
        self.sock_path = sock_path
        self._cond = threading.Condition()
        self._write_lock = threading.Lock()
        self._connect_lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._decoder = p.Decoder()
        self._queues: dict[int, collections.deque[p.Frame]] = {}
        self._next_channel = 1
        self._reading = False
        self._error: str | None = None

    # -- connection -------------------------------------------------------------------

    def _ensure(self, deadline: float) -> None:
        with self._connect_lock:
            if self._sock is not None and self._error is None:
                return
            self.close()
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            try:
                sock.settimeout(max(deadline - time.monotonic(), 0.01))
                sock.connect(str(self.sock_path))
                nonce = os.urandom(8)
                sock.sendall(p.encode(p.Frame(p.T.HELLO, 0, nonce)))
                decoder = p.Decoder()
                while True:  # the guest answers once its agent runs (it may still be booting)
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise AgentError("the guest agent did not answer in time (is the guest still booting?)")
                    sock.settimeout(left)
                    data = sock.recv(65536)
                    if not data:
                        raise AgentError("the VM closed the agent connection")
                    try:
                        if any(f.type == p.T.HELLO_ACK and f.payload == nonce for f in decoder.feed(data)):
                            break
                    except p.ProtocolError:  # the torn tail of an earlier connection: drop it
                        decoder = p.Decoder()
            except (OSError, p.ProtocolError) as exc:
                sock.close()
                raise AgentError(f"cannot reach the guest agent: {exc}") from None
            except AgentError:
                sock.close()
                raise
            with self._cond:
                self._sock, self._decoder, self._error = sock, p.Decoder(), None
                self._queues.clear()

    def close(self) -> None:
        with self._cond:
            if self._sock is not None:
                self._sock.close()
            self._sock = None
            self._error = "connection closed"
            for q in self._queues.values():
                q.clear()
            self._cond.notify_all()

    # -- channels ---------------------------------------------------------------------

    def open(self, deadline: float) -> int:
        self._ensure(deadline)
        with self._cond:
            channel = self._next_channel
            self._next_channel = self._next_channel % 0x7FFFFFFF + 1
            self._queues[channel] = collections.deque()
            return channel

    def release(self, channel: int) -> None:
        with self._cond:
            self._queues.pop(channel, None)

    def send(self, frame: p.Frame) -> None:
        sock = self._sock
        if sock is None or self._error is not None:
            raise AgentError(self._error or "not connected")
        data = p.encode(frame)
        try:
            with self._write_lock:
                sock.sendall(data)
        except OSError as exc:
            self._fail(f"sending to the guest agent failed: {exc}")
            raise AgentError(f"sending to the guest agent failed: {exc}") from None

    def _fail(self, why: str) -> None:
        with self._cond:
            self._error = why
            self._cond.notify_all()

    def next(self, channel: int, deadline: float) -> p.Frame | None:
        """The channel's next frame, or None at the deadline."""
        while True:
            with self._cond:
                while True:
                    q = self._queues.get(channel)
                    if q:
                        return q.popleft()
                    if self._error is not None:
                        raise AgentError(self._error)
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return None
                    if not self._reading:
                        self._reading = True
                        sock = self._sock
                        break
                    self._cond.wait(min(left, READ_SLICE))
            frames: list[p.Frame] = []
            error = None
            try:
                assert sock is not None
                sock.settimeout(min(left, READ_SLICE))
                data = sock.recv(65536)
                if not data:
                    error = "the VM closed the agent connection (did it stop?)"
                else:
                    frames = self._decoder.feed(data)
            except TimeoutError:
                pass
            except (OSError, p.ProtocolError) as exc:
                error = f"agent connection failed: {exc}"
            with self._cond:
                self._reading = False
                for f in frames:
                    if f.channel in self._queues:
                        self._queues[f.channel].append(f)
                if error:
                    self._error = error
                self._cond.notify_all()


class Links:
    """One ``Link`` per VM, made on first use, shared by every exec into that VM."""

    def __init__(self) -> None:
        self._links: dict[str, Link] = {}
        self._lock = threading.Lock()

    def get(self, key: str, sock_path: Path) -> Link:
        with self._lock:
            link = self._links.get(key)
            if link is None or link.sock_path != sock_path:
                link = self._links[key] = Link(sock_path)
            return link

    def drop(self, key: str) -> None:
        with self._lock:
            link = self._links.pop(key, None)
        if link is not None:
            link.close()

    def close(self) -> None:
        for key in list(self._links):
            self.drop(key)


def run(link: Link, argv: list[str], timeout: float, *, env: dict[str, str] | None = None, stdin: bytes | ExecStdin | None = None) -> Iterator[tuple[str, bytes]]:
    """Yield ("stdout"|"stderr", chunk) as the command writes, then ("exit", b"<code>").

    At the deadline the command's process group is killed and the exit code is 124, as
    timeout(1) reports it (the runc backend does the same). ``stdin``: bytes fed to the
    command, then end of input, or a user's input as it comes (``exec -i``); None gives it
    /dev/null.
    """
    deadline = time.monotonic() + timeout
    payload = p.exec_payload(argv, env)
    channel = link.open(deadline)
    done = False
    feeder = None
    try:
        link.send(p.Frame(p.T.EXEC, channel, payload, p.FLAG_STDIN if stdin is not None else 0))
        for frame in p.stdin_frames(channel, stdin, close=True) if isinstance(stdin, bytes) else []:
            link.send(frame)
        if isinstance(stdin, ExecStdin):

            def send(frames: list[p.Frame]) -> None:
                try:
                    for frame in frames:
                        link.send(frame)
                except AgentError as exc:  # the feeder's sign that the input has nowhere to go
                    raise OSError(str(exc)) from None

            feeder = start_feeder(stdin, lambda data: send(p.stdin_frames(channel, data, close=False)), lambda: send([p.Frame(p.T.STDIN, channel)]))
        while True:
            f = link.next(channel, deadline)
            if f is None:
                link.send(p.Frame(p.T.SIGNAL, channel, p.signal_payload(signal.SIGKILL)))
                end = time.monotonic() + KILL_GRACE
                while (f := link.next(channel, end)) is not None and f.type != p.T.EXIT:
                    pass
                done = True
                yield "stderr", f"timed out after {timeout:g} s\n".encode()
                yield "exit", b"124"
                return
            if f.type == p.T.STDOUT:
                yield "stdout", f.payload
            elif f.type == p.T.STDERR:
                yield "stderr", f.payload
            elif f.type == p.T.ERROR:
                yield "stderr", b"slicemesh-agent: " + f.payload + b"\n"
            elif f.type == p.T.EXIT:
                done = True
                yield "exit", str(p.exit_code(f.payload)).encode()
                return
    finally:
        if not done:  # the caller gave up on the stream: do not leave the command running
            with contextlib.suppress(AgentError):
                link.send(p.Frame(p.T.SIGNAL, channel, p.signal_payload(signal.SIGKILL)))
        if feeder is not None:  # before the channel is free for another command
            assert isinstance(stdin, ExecStdin)
            stdin.stop()
            feeder.join(timeout=5)
        link.release(channel)


def guest_meminfo(link: Link, timeout: float) -> dict[str, int]:
    """The guest's own view of its memory (/proc/meminfo, in bytes)."""
    deadline = time.monotonic() + timeout
    channel = link.open(deadline)
    try:
        link.send(p.Frame(p.T.STAT, channel))
        f = link.next(channel, deadline)
        if f is None or f.type != p.T.STAT_REPLY:
            raise AgentError("the guest agent did not report its memory in time")
        return p.meminfo(f.payload.decode(errors="replace"))
    finally:
        link.release(channel)
