"""ZeroMQ sockets and polling: the only module that imports ``zmq``.

The controller binds a ROUTER; agents and clients connect DEALERs (no REQ/REP lockstep, so a
lost reply never wedges a socket). Everything above this module sees bytes, peers and file
descriptors, never zmq objects.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable
from typing import Any

import zmq

log = logging.getLogger(__name__)

#: libzmq drops frames over this many bytes before they reach Python at all; the codec's
#: smaller, configurable cap logs and drops anything between the two.
HARD_FRAME_CAP = 64 * 1024 * 1024

_context: zmq.Context[Any] | None = None


def context() -> zmq.Context[Any]:
    global _context
    if _context is None or _context.closed:
        _context = zmq.Context()
        _context.set(zmq.MAX_SOCKETS, 65536)  # a simulation host holds thousands of agent sockets
    return _context


class TransportError(Exception):
    pass


class Router:
    """The controller's bound socket: messages arrive tagged with the peer's identity."""

    def __init__(self, url: str, *, sndhwm: int = 100_000, rcvhwm: int = 100_000) -> None:
        self.sock = context().socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SNDHWM, sndhwm)
        self.sock.setsockopt(zmq.RCVHWM, rcvhwm)
        self.sock.setsockopt(zmq.MAXMSGSIZE, HARD_FRAME_CAP)
        self.sock.setsockopt(zmq.ROUTER_HANDOVER, 1)  # a reconnecting agent takes its identity back
        try:
            self.sock.bind(url)
        except zmq.ZMQError as exc:
            self.sock.close()
            raise TransportError(f"cannot bind {url}: {exc}") from None
        self.url: str = str(self.sock.getsockopt_string(zmq.LAST_ENDPOINT))

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def recv(self) -> tuple[bytes, list[bytes], str] | None:
        """One message without blocking: (peer identity, payload frames, peer address)."""
        try:
            frames = self.sock.recv_multipart(zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return None
        address = ""
        try:
            address = frames[-1].get("Peer-Address") or ""
        except zmq.ZMQError:
            pass
        return frames[0].bytes, [f.bytes for f in frames[1:]], address

    def send(self, peer: bytes, payload: bytes) -> bool:
        try:
            self.sock.send_multipart([peer, payload], zmq.NOBLOCK)
            return True
        except zmq.ZMQError as exc:  # HWM reached: the peer is not reading; drop, it will resync
            log.warning("dropping a message to %r: %s", peer, exc)
            return False

    def close(self) -> None:
        self.sock.close(0)


class Dealer:
    """An agent's or client's connection; zmq reconnects on its own with backoff."""

    def __init__(self, url: str, identity: str, *, reconnect_ms: int = 100, reconnect_max_ms: int = 5000, hwm: int = 10_000) -> None:
        self.url = url
        self.identity = identity
        self.sock = context().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.IDENTITY, identity.encode())
        self.sock.setsockopt(zmq.SNDHWM, hwm)
        self.sock.setsockopt(zmq.RCVHWM, hwm)
        self.sock.setsockopt(zmq.RECONNECT_IVL, reconnect_ms)
        self.sock.setsockopt(zmq.RECONNECT_IVL_MAX, reconnect_max_ms)
        self.sock.setsockopt(zmq.MAXMSGSIZE, HARD_FRAME_CAP)
        self.sock.setsockopt(zmq.TCP_KEEPALIVE, 1)
        try:
            self.sock.connect(url)
        except zmq.ZMQError as exc:
            self.sock.close()
            raise TransportError(f"cannot connect to {url}: {exc}") from None

    def send(self, payload: bytes) -> bool:
        try:
            self.sock.send(payload, zmq.NOBLOCK)
            return True
        except zmq.ZMQError as exc:
            log.warning("dropping a message to %s: %s", self.url, exc)
            return False

    def recv(self) -> bytes | None:
        try:
            frames = self.sock.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return None
        last: bytes = frames[-1]
        return last

    def wait(self, timeout_s: float) -> bool:
        """Block until a message is readable or the timeout passes."""
        return bool(self.sock.poll(max(0, int(timeout_s * 1000)), zmq.POLLIN))

    def close(self) -> None:
        self.sock.close(0)


class Poller:
    """Waits on many sockets and plain file descriptors at once."""

    def __init__(self) -> None:
        self._poller = zmq.Poller()
        self._by_sock: dict[Any, Any] = {}

    def add(self, thing: Router | Dealer | int) -> None:
        key = thing if isinstance(thing, int) else thing.sock
        self._by_sock[key] = thing
        self._poller.register(key, zmq.POLLIN)

    def remove(self, thing: Router | Dealer | int) -> None:
        key = thing if isinstance(thing, int) else thing.sock
        self._by_sock.pop(key, None)
        try:
            self._poller.unregister(key)
        except KeyError:
            pass

    def poll(self, timeout_s: float | None) -> Iterable[Router | Dealer | int]:
        ms = None if timeout_s is None else max(0, int(timeout_s * 1000))
        return [self._by_sock[s] for s, _ in self._poller.poll(ms)]


class Waker:
    """A file descriptor that other threads (or a signal handler) write to wake a poller loop.

    ``wake`` may race with ``close`` from another thread: the lock and the closed flag make a
    late wake a no-op, never a write to a closed descriptor whose number the process may
    already have reused for something else.
    """

    def __init__(self) -> None:
        self.fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._lock = threading.RLock()  # re-entrant: a signal handler may wake during a close
        self._closed = False

    def wake(self) -> None:
        with self._lock:
            if not self._closed:
                os.eventfd_write(self.fd, 1)

    def clear(self) -> None:
        try:
            os.eventfd_read(self.fd)
        except BlockingIOError:
            pass

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                os.close(self.fd)
