"""The controller's first start: its own key pair and the first admin's identity.

``<keys_dir>/controller.key`` is the public half operators copy to agents and users;
``controller.key_secret`` never leaves the machine. With no admin in the store, the
controller makes one (``admin``, site ``admin``) and writes its identity file to
``<keys_dir>/admin.identity.yaml``: ``slicemesh login --identity`` that file, as root, on the
controller machine, and add real users from there.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path

from controller.keyring import KeyRing
from controller.truststore import Principal
from slices import identity
from slices.transport import Keypair, TransportError, new_keypair, read_keypair, write_keypair

log = logging.getLogger(__name__)

ADMIN = "admin"


def server_keypair(keys_dir: Path) -> Keypair:
    secret = keys_dir / "controller.key_secret"
    if secret.exists():
        pair = read_keypair(secret)
        if not pair.secret:
            raise TransportError(f"{secret} holds no secret key")
        return pair
    pair = new_keypair()
    keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_keypair(keys_dir / "controller", pair)
    log.info("made the controller's key pair: give %s to agents and users", keys_dir / "controller.key")
    return pair


def advertised(url: str, setting: str) -> str:
    """The URL clients should use: the setting, or the bound endpoint with a reachable host."""
    if setting:
        return setting
    host_port = url.removeprefix("tcp://")
    host, _, port = host_port.rpartition(":")
    if host in ("0.0.0.0", "*", "[::]", "::"):
        host = socket.getfqdn()
    return f"tcp://{host}:{port}"


def first_admin(keyring: KeyRing, keys_dir: Path, url: str, server: Keypair) -> Path | None:
    """Make the first admin when there is none; returns where its identity was written."""
    if keyring.has_admin():
        return None
    pair = new_keypair()
    now = keyring.clock()
    keyring.put(Principal(pair.public, "user", ADMIN, "accepted", role="admin", site=ADMIN, created=now, updated=now))
    path = keys_dir / "admin.identity.yaml"
    identity.write(identity.Identity(ADMIN, url, server.public, pair, ADMIN), path=path)
    log.warning("made the first admin; its identity is %s: run `slicemesh login --identity %s` (it is a secret key)", path, path)
    return path
