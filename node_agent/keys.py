"""This node's CURVE identity: its own key pair (made on first start) and the controller's key.

The public half of the node's key is what an operator accepts (``slicemesh keys accept``) or
pre-seeds (``slicemesh keys add NODE FILE``); the agent logs it at start.
"""

from __future__ import annotations

import logging
from pathlib import Path

from slices.errors import SpecError
from slices.transport import ClientKeys, Keypair, TransportError, is_key, new_keypair, read_keypair, write_keypair

log = logging.getLogger(__name__)


def controller_key(setting: str) -> str:
    """The controller's public key from the setting: the key itself or a key file."""
    if is_key(setting):
        return setting
    try:
        return read_keypair(Path(setting)).public
    except TransportError as exc:
        raise SpecError(
            "controller_key", f"{exc}; copy the controller's keys_dir/controller.key to this machine and point controller_key at it"
        ) from None


def node_keypair(secret_file: Path) -> Keypair:
    """The node's key pair, made (mode 0600) the first time."""
    if secret_file.exists():
        try:
            pair = read_keypair(secret_file)
        except TransportError as exc:
            raise SpecError("key_file", str(exc)) from None
        if not pair.secret:
            raise SpecError("key_file", f"{secret_file} holds no secret key")
        return pair
    pair = new_keypair()
    name = secret_file.name.removesuffix(".key_secret")
    write_keypair(secret_file.with_name(name), pair)
    log.info("made this node's key pair in %s", secret_file)
    return pair


def agent_keys(controller: str, key_file: str, state_dir: Path) -> ClientKeys:
    secret = Path(key_file) if key_file else state_dir / "agent.key_secret"
    return ClientKeys(controller_key(controller), node_keypair(secret))
