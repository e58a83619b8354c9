"""The controller's two bound sockets: the agents' (``listen``) and the users' (``user_listen``).

Why two: a ROUTER socket serves its peers round-robin, one message each in turn. With
10,000 agents heartbeating and reporting into one socket, a user's ``ping`` waited its turn
behind a backlog of agent messages: seconds on a busy controller (docs/benchmarks.md,
"Responsiveness"). Users now have a socket of their own, which the loop reads first and again
between every few agent messages (``server.py``), so a user's request waits behind at most a
few agent messages, not behind all of them. Nomad keeps its HTTP API and its RPC port apart
for the same reason.

The agents' socket still answers users (old identity files name it; a test's client may use
it), in turn with the agents. The users' socket answers user keys only: an agent's messages
there are dropped, so an agent's flood cannot take the users' lane, and enrolment (an unknown
key's ``register``) happens on the agents' socket only.

One ``send(peer, payload)`` serves both: a peer read from the users' socket is handed to the
rest of the controller as ``USER_TAG + identity``. No identity on the agents' socket starts
with that byte (libzmq's own ids start with 0, every slicemesh Dealer's with 1; a peer that
picks one that does is dropped), so a reply,
a deferred answer or a stored reply for a retry always goes back out of the socket its
request came in by, without any other module knowing there are two.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from controller.bootstrap import advertised
from slices.transport import Keypair, Router, TransportError

log = logging.getLogger(__name__)

USER_TAG = b"\xfe"  # first byte of a peer that came in on the users' socket
OFF = "off"


def on_users_socket(peer: bytes) -> bool:
    """Whether a peer (as the rest of the controller knows it) came in on the users' socket."""
    return peer[:1] == USER_TAG


def user_endpoint(listen: str, setting: str) -> str | None:
    """Where the users' socket binds: the setting, or ``listen``'s address with the next
    port (a random one when ``listen``'s is ``*``); ``None`` for ``off``."""
    if setting == OFF:
        return None
    if setting:
        return setting
    head, _, port = listen.rpartition(":")
    if head.startswith("tcp://") and (port == "*" or port.isdigit()):
        return f"{head}:{port if port == '*' else int(port) + 1}"
    raise TransportError(f"cannot derive user_listen from listen {listen!r}: set user_listen (or off)")


def with_port(url: str, port_of: str) -> str:
    """``url``'s host with ``port_of``'s port (the advertised host, the bound port)."""
    return f"{url.rpartition(':')[0]}:{port_of.rpartition(':')[2]}"


class Sockets:
    def __init__(self, listen: str, user_listen: str, keys: Keypair, allow: Callable[[str], bool], advertise: str, *, warn: Callable[..., None] = log.warning) -> None:
        self.warn = warn  # at a bounded rate, by the server: a flood must not fill the disk
        self.agents = Router(listen, keys, allow)
        self.users: Router | None = None
        where = user_endpoint(listen, user_listen)
        if where is not None:
            try:
                self.users = Router(where, keys, allow, beside=self.agents)
            except TransportError:
                self.agents.close()
                raise
        self.url = self.agents.url
        self.advertised = advertised(self.url, advertise)
        #: What users are told to use (identity files): the users' socket at the advertised host.
        self.user_url = self.users.url if self.users is not None else self.url
        self.user_advertised = with_port(self.advertised, self.user_url) if self.users is not None else self.advertised

    def recv_agent(self) -> tuple[bytes, list[bytes], str, str] | None:
        """The next message on the agents' socket; one from a peer that chose an identity
        starting with ``USER_TAG`` is dropped (its replies would go out of the other socket)."""
        while (got := self.agents.recv()) is not None:
            if not on_users_socket(got[0]):
                return got
            self.warn("dropping a message from %s: its routing identity starts with a reserved byte", got[2] or "?")
        return None

    def recv_user(self) -> tuple[bytes, list[bytes], str, str] | None:
        if self.users is None:
            return None
        got = self.users.recv()
        if got is None:
            return None
        peer, frames, address, key = got
        return USER_TAG + peer, frames, address, key

    def send(self, peer: bytes, payload: bytes) -> bool:
        if on_users_socket(peer) and self.users is not None:
            return self.users.send(peer[1:], payload)
        return self.agents.send(peer, payload)

    def close(self) -> None:
        if self.users is not None:
            self.users.close()  # before the agents' socket, whose context it shares
        self.agents.close()
