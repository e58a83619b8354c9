"""Benchmarks without CURVE, to measure what CURVE costs: ``--no-curve`` of ``bench e2e`` and
``bench churn``. Never a production mode: nothing in ``slices``, ``controller`` or
``node_agent`` can turn CURVE off; only a process this module starts runs without it.

``install()`` rewrites, in this process only, how ``slices.transport`` makes its two sockets:
no CURVE options and no ZAP authenticator, and the client's public key travels in its routing
identity (``0x01`` + the 40-character z85 key + 8 random bytes) instead of being proved by a
handshake; ``Router.recv`` hands that key up where CURVE's ``User-Id`` would be. Everything
above the transport (principals, access rules, the retry cache) runs exactly as with CURVE,
so the difference between the two runs is the cost of the cipher, the handshake and ZAP.

    python -m benchmarks.plaintext -m slices.cli controller ...   # a child process, plaintext
"""

from __future__ import annotations

import os
import runpy
import sys
from collections.abc import Callable
from typing import Any

import zmq

from slices import transport
from slices.transport import HARD_FRAME_CAP, ClientKeys, Dealer, Keypair, Router, TransportError

_KEY = 40  # z85 characters of a CURVE public key


def _router_init(self: Router, url: str, keys: Keypair, allow: Callable[[str], bool], *, sndhwm: int = 1000, rcvhwm: int = 100_000, beside: Router | None = None) -> None:
    self.ctx = beside.ctx if beside is not None else zmq.Context()
    self.ctx.set(zmq.MAX_SOCKETS, 65536)
    self.auth = None
    self.owns_ctx = beside is None  # type: ignore[attr-defined]
    self.sock = self.ctx.socket(zmq.ROUTER)
    for opt, value in ((zmq.LINGER, 0), (zmq.SNDHWM, sndhwm), (zmq.RCVHWM, rcvhwm), (zmq.MAXMSGSIZE, HARD_FRAME_CAP), (zmq.ROUTER_HANDOVER, 1)):
        self.sock.setsockopt(opt, value)
    try:
        self.sock.bind(url)
    except zmq.ZMQError as exc:
        self.close()
        raise TransportError(f"cannot bind {url}: {exc}") from None
    self.url = str(self.sock.getsockopt_string(zmq.LAST_ENDPOINT))


_router_recv = Router.recv


def _recv(self: Router) -> tuple[bytes, list[bytes], str, str] | None:
    got = _router_recv(self)
    if got is None:
        return None
    peer, frames, address, _ = got
    key = peer[1 : 1 + _KEY].decode("ascii", "replace") if len(peer) > _KEY else ""
    return peer, frames, address, key


def _router_close(self: Router) -> None:
    self.sock.close(0)
    if self.owns_ctx:  # type: ignore[attr-defined]
        self.ctx.term()


def _dealer_init(self: Dealer, url: str, identity: str, keys: ClientKeys, *, reconnect_ms: int = 100, reconnect_max_ms: int = 5000, hwm: int = 10_000) -> None:
    self.url = url
    self.identity = identity
    self.watcher = None  # as Dealer.__init__: ManyPoller sets it
    self.sock = transport.context().socket(zmq.DEALER)
    self.sock.setsockopt(zmq.IDENTITY, b"\x01" + keys.own.public.encode("ascii") + os.urandom(8))
    options = ((zmq.LINGER, 0), (zmq.SNDHWM, hwm), (zmq.RCVHWM, hwm), (zmq.RECONNECT_IVL, reconnect_ms), (zmq.RECONNECT_IVL_MAX, reconnect_max_ms))
    for opt, value in (*options, (zmq.MAXMSGSIZE, HARD_FRAME_CAP), (zmq.TCP_KEEPALIVE, 1)):
        self.sock.setsockopt(opt, value)
    try:
        self.sock.connect(url)
    except zmq.ZMQError as exc:
        self.sock.close()
        raise TransportError(f"cannot connect to {url}: {exc}") from None


def install() -> None:
    """Sockets made from now on in this process speak plaintext (see the module's doc)."""
    patches: dict[tuple[type[Any], str], Any] = {(Router, "__init__"): _router_init, (Router, "recv"): _recv, (Router, "close"): _router_close, (Dealer, "__init__"): _dealer_init}
    for (cls, name), fn in patches.items():
        setattr(cls, name, fn)


def command(args: list[str]) -> list[str]:
    """``python`` arguments that run ``args`` (``-m module ...``) in plaintext."""
    return ["-m", "benchmarks.plaintext", *args]


def main() -> None:
    if len(sys.argv) < 3 or sys.argv[1] != "-m":
        raise SystemExit("usage: python -m benchmarks.plaintext -m MODULE [ARGS...]")
    install()
    module = sys.argv[2]
    sys.argv = [module, *sys.argv[3:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
