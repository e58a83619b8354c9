"""ZeroMQ sockets, polling and CURVE keys: the only module that imports ``zmq``.

The controller binds a ROUTER; agents and clients connect DEALERs (no REQ/REP lockstep, so a
lost reply never wedges a socket). Everything above this module sees bytes, peers, keys and
file descriptors, never zmq objects.

Security: every socket speaks CURVE. The server side runs pyzmq's own ZAP authenticator in
its own context (one ZAP handler per context, so two controllers in one process do not
share one), asks a callback whether a client key may connect at all, and hands each message
up with the key it was authenticated with (the frame's ``User-Id``): who a peer is comes from
that key, never from anything in a message. Clients use a random 16-byte routing identity, so
no other peer can guess it and take over their replies.
"""

from __future__ import annotations

import logging
import os
import selectors
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
import zmq.auth
from zmq.utils import z85

from slices.memory import MAP_LARGE_FROM

_MORE = zmq.NOBLOCK | zmq.SNDMORE

log = logging.getLogger(__name__)

#: libzmq drops frames over this many bytes before they reach Python at all; the codec's
#: smaller, configurable cap logs and drops anything between the two.
HARD_FRAME_CAP = 64 * 1024 * 1024
COPY_FROM = 64 * 1024  # smaller frames are copied out: a view costs more than the copy

_context: zmq.Context[Any] | None = None


def context() -> zmq.Context[Any]:
    global _context
    if _context is None or _context.closed:
        _context = zmq.Context()
        _context.set(zmq.MAX_SOCKETS, 65536)  # a simulation host holds thousands of agent sockets
    return _context


class TransportError(Exception):
    pass


# ---- keys ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Keypair:
    """A CURVE key pair as z85 text (40 characters each); ``secret`` is empty for a public-only key."""

    public: str
    secret: str = ""


def new_keypair() -> Keypair:
    public, secret = zmq.curve_keypair()
    return Keypair(public.decode("ascii"), secret.decode("ascii"))


def public_of(secret: str) -> str:
    return str(zmq.curve_public(secret.encode("ascii")).decode("ascii"))


def is_key(text: object) -> bool:
    """A z85-encoded 32-byte key: 40 characters of the z85 alphabet."""
    if not isinstance(text, str) or len(text) != 40:
        return False
    try:
        return len(z85.decode(text.encode("ascii"))) == 32
    except Exception:  # z85 raises several types for characters outside its alphabet
        return False


def _cert_text(banner: str, pair: Keypair, with_secret: bool) -> str:
    lines = [f"#   {banner}", "metadata", "curve", f'    public-key = "{pair.public}"']
    if with_secret:
        lines.append(f'    secret-key = "{pair.secret}"')
    return "\n".join(lines) + "\n"


def write_keypair(base: Path, pair: Keypair) -> tuple[Path, Path | None]:
    """``base.key`` (public) and ``base.key_secret`` (mode 0600) in ZeroMQ's certificate
    format, so ``zmq.auth.load_certificate`` and other ZeroMQ tools read them too."""
    base.parent.mkdir(parents=True, exist_ok=True)
    public = base.with_name(base.name + ".key")
    public.write_text(_cert_text("slicemesh public key", pair, False))
    if not pair.secret:
        return public, None
    secret = base.with_name(base.name + ".key_secret")
    fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(_cert_text("slicemesh secret key: keep it private", pair, True))
    os.chmod(secret, 0o600)
    return public, secret


def read_keypair(path: Path) -> Keypair:
    """A ``.key`` or ``.key_secret`` file (ZeroMQ's certificate format)."""
    try:
        public, secret = zmq.auth.load_certificate(str(path))
    except (OSError, ValueError) as exc:
        raise TransportError(f"cannot read key file {path}: {exc}") from None
    pair = Keypair(public.decode("ascii"), secret.decode("ascii") if secret else "")
    if not is_key(pair.public) or (pair.secret and not is_key(pair.secret)):
        raise TransportError(f"{path} does not hold a valid CURVE key")
    return pair


@dataclass(frozen=True)
class ClientKeys:
    """What a client needs to talk to a server: the server's public key and its own pair."""

    server: str
    own: Keypair


class _Gate:
    """The ZAP credentials provider: asks ``allow(z85_key)`` (on the authenticator's thread)."""

    def __init__(self, allow: Callable[[str], bool]) -> None:
        self.allow = allow

    def callback(self, domain: str, key: bytes) -> bool:
        try:
            return bool(self.allow(key.decode("ascii")))
        except Exception:  # a bug in the gate must not kill the authenticator thread
            log.exception("key check failed; refusing the connection")
            return False


# ---- sockets -----------------------------------------------------------------------------------


ZAP_DOMAIN = "slicemesh"


class Router:
    """The controller's bound socket: messages arrive tagged with peer identity and key.

    ``allow`` decides, per connection, whether a client key may complete the handshake;
    the controller then decides per message what that key may do.
    """

    def __init__(self, url: str, keys: Keypair, allow: Callable[[str], bool], *, sndhwm: int = 1000, rcvhwm: int = 100_000, beside: Router | None = None) -> None:
        """``beside``: bind a second socket in that Router's context, checked by its
        authenticator (libzmq has one ZAP handler per context); closing it leaves that one be."""
        self.auth: Any = None
        if beside is not None:
            self.ctx: zmq.Context[Any] = beside.ctx
        else:
            self.ctx = zmq.Context()
            self.ctx.set(zmq.MAX_SOCKETS, 65536)
            from zmq.auth.thread import ThreadAuthenticator  # the server's only: it pulls in asyncio, 0.1 s of every CLI command

            self.auth = ThreadAuthenticator(self.ctx, log=logging.getLogger("slicemesh.zap"))
            self.auth.start()  # waits until its thread serves ZAP, so no handshake races it
            self.auth.configure_curve_callback(ZAP_DOMAIN, _Gate(allow))
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SNDHWM, sndhwm)  # per peer: a client that never reads costs a bounded queue
        self.sock.setsockopt(zmq.RCVHWM, rcvhwm)
        self.sock.setsockopt(zmq.MAXMSGSIZE, HARD_FRAME_CAP)
        self.sock.setsockopt(zmq.ROUTER_HANDOVER, 1)  # a reconnecting peer takes its (secret) identity back
        self.sock.setsockopt(zmq.CURVE_SERVER, 1)
        self.sock.setsockopt(zmq.CURVE_SECRETKEY, keys.secret.encode("ascii"))
        self.sock.setsockopt(zmq.CURVE_PUBLICKEY, keys.public.encode("ascii"))
        self.sock.setsockopt_string(zmq.ZAP_DOMAIN, ZAP_DOMAIN)
        try:
            self.sock.bind(url)
        except zmq.ZMQError as exc:
            self.close()
            raise TransportError(f"cannot bind {url}: {exc}") from None
        self.url: str = str(self.sock.getsockopt_string(zmq.LAST_ENDPOINT))

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def recv(self) -> tuple[bytes, list[bytes], str, str] | None:
        """One message without blocking: (peer identity, payload frames, address, client key)."""
        try:
            frames = self.sock.recv_multipart(zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return None
        address = key = ""
        try:
            address = str(frames[-1].get("Peer-Address") or "")
            key = str(frames[-1].get("User-Id") or "")
        except zmq.ZMQError:
            pass
        return frames[0].bytes, [f.bytes for f in frames[1:]], address, key

    def send(self, peer: bytes, payload: bytes) -> bool:
        try:
            # A MiB or more is not copied: a 5 MB reply copied into a new mapping (glibc maps
            # such blocks afresh: slices/memory.py) cost its page faults, 20-44 ms on a loaded
            # machine (bench responsiveness). The bytes are immutable; libzmq lets go of them
            # once sent. Smaller frames come from the heap and are copied as before.
            # Two sends, not send_multipart (a Python loop over its frames: 2.3 us a message
            # against 0.8 here, and the controller pushes 10,000 sets for a big slice). The
            # identity frame is where a ROUTER takes or refuses the message, as there.
            self.sock.send(peer, _MORE)
            self.sock.send(payload, zmq.NOBLOCK, copy=len(payload) < MAP_LARGE_FROM)
            return True
        except zmq.ZMQError as exc:  # HWM reached: the peer is not reading; drop, it will resync
            log.warning("dropping a message to %r: %s", peer, exc)
            return False

    def close(self) -> None:
        self.sock.close(0)
        if self.auth is not None:  # the context's owner (close the others first)
            self.auth.stop()
            self.ctx.term()


class Dealer:
    """An agent's or client's connection; zmq reconnects on its own with backoff.

    ``identity`` is a name for logs only; the routing identity on the wire is random.
    """

    def __init__(self, url: str, identity: str, keys: ClientKeys, *, reconnect_ms: int = 100, reconnect_max_ms: int = 5000, hwm: int = 10_000) -> None:
        self.url = url
        self.identity = identity
        #: told of every send and every message received (``ManyPoller``: either may take
        #: the socket's notification signal while a message waits)
        self.watcher: Callable[[Dealer], None] | None = None
        self.sock = context().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.IDENTITY, b"\x01" + os.urandom(15))  # never starts with 0: libzmq's own ids do
        self.sock.setsockopt(zmq.CURVE_SERVERKEY, keys.server.encode("ascii"))
        self.sock.setsockopt(zmq.CURVE_PUBLICKEY, keys.own.public.encode("ascii"))
        self.sock.setsockopt(zmq.CURVE_SECRETKEY, keys.own.secret.encode("ascii"))
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
        if self.watcher is not None:
            self.watcher(self)
        try:
            self.sock.send(payload, zmq.NOBLOCK)
            return True
        except zmq.ZMQError as exc:
            log.warning("dropping a message to %s: %s", self.url, exc)
            return False

    def recv(self) -> bytes | memoryview | None:
        """The last frame of one message, without blocking. A frame of ``COPY_FROM`` bytes or
        more is a view of libzmq's own buffer, not a copy: a peer's many-MiB frame, refused
        by size, costs its one buffer."""
        try:
            frames = self.sock.recv_multipart(zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return None
        if self.watcher is not None:
            self.watcher(self)  # more may be queued behind it
        last: zmq.Frame = frames[-1]
        data: bytes | memoryview = last.buffer if len(last) >= COPY_FROM else last.bytes
        return data

    def readable(self) -> bool:
        """A message is waiting (asking also consumes the socket's notification signal)."""
        try:
            return bool(self.sock.getsockopt(zmq.EVENTS) & zmq.POLLIN)
        except zmq.ZMQError:  # closed
            return False

    def wait(self, timeout_s: float) -> bool:
        """Block until a message is readable or the timeout passes."""
        return bool(self.sock.poll(max(0, int(timeout_s * 1000)), zmq.POLLIN))

    def close(self, linger_ms: int = 0) -> None:
        """Close; ``linger_ms`` lets queued messages (a goodbye) leave first, for that long."""
        self.sock.close(linger_ms)


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


class ManyPoller:
    """``Poller``'s interface in time proportional to what is ready, not to what is watched.

    ``zmq_poll`` asks every socket for its state on every call: over the 2,500 sockets of a
    simulation host that was 12 ms a call, several hundred calls a second, a core burnt on
    asking. Here the kernel watches each socket's notification descriptor (``zmq.FD``) with
    epoll, and only a socket whose descriptor fired is asked. That descriptor signals that
    the socket's state *may* have changed, and only until its ``zmq.EVENTS`` is read, by us
    or by libzmq inside any send; so a socket that may still hold messages (the caller read
    fewer than were queued, or sent since) stays on a short list that every call asks again
    without waiting, until it says it has nothing. Each watched Dealer tells the poller of
    its every send and receive (``Dealer.watcher``), so no caller has to.
    """

    def __init__(self) -> None:
        self._sel = selectors.DefaultSelector()
        self._fds: dict[int, int] = {}  # notification fd, by id of its Dealer
        self._maybe: dict[int, Dealer] = {}  # sockets that may hold messages, by id

    def add(self, thing: Dealer | int) -> None:
        if isinstance(thing, int):
            self._sel.register(thing, selectors.EVENT_READ, thing)
            return
        fd = int(thing.sock.getsockopt(zmq.FD))
        self._fds[id(thing)] = fd
        self._sel.register(fd, selectors.EVENT_READ, thing)
        thing.watcher = self.touched
        self._maybe[id(thing)] = thing  # messages may have come before it was watched

    def remove(self, thing: Dealer | int) -> None:
        if isinstance(thing, int):
            fd = thing
        else:
            thing.watcher = None
            self._maybe.pop(id(thing), None)
            fd = self._fds.pop(id(thing), -1)
        try:
            self._sel.unregister(fd)
        except (KeyError, ValueError):
            pass

    def touched(self, dealer: Dealer) -> None:
        """``dealer`` was used: its descriptor's signal may have been consumed."""
        self._maybe[id(dealer)] = dealer

    def poll(self, timeout_s: float | None) -> list[Dealer | int]:
        events = self._sel.select(0 if self._maybe else timeout_s)
        ready: list[Dealer | int] = []
        for key, _ in events:
            if isinstance(key.data, Dealer):
                self._maybe[id(key.data)] = key.data
            else:
                ready.append(key.fd)
        for k, dealer in list(self._maybe.items()):
            if dealer.readable():
                ready.append(dealer)  # the caller reads; it stays listed until it says nothing
            else:
                del self._maybe[k]
        return ready

    def close(self) -> None:
        self._sel.close()


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
