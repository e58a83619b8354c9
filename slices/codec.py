"""The envelope: one versioned, msgpack-encoded map per ZeroMQ payload frame.

    {"v": 1, "type": "create_slice", "id": "9f2c...", "from": "cli-alice-1234",
     "ts": 1764086400.123, "body": {...}}

Replies reuse the request's ``id``. ``decode`` never trusts the bytes: anything that is not a
well-formed envelope of a known type raises ``ProtocolError`` (the caller logs and drops it).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import msgpack

from slices.errors import ProtocolError
from slices.messages import PROTOCOL_VERSION, Message, body_of, build

DEFAULT_MAX_BYTES = 1024 * 1024


class VersionMismatch(ProtocolError):
    """A well-formed envelope of another protocol version: refused with both versions named."""

    code = "version-mismatch"

    def __init__(self, version: int, type_name: str, msg_id: str) -> None:
        super().__init__(f"peer speaks slicemesh protocol v{version}, this side speaks v{PROTOCOL_VERSION}")
        self.version = version
        self.type_name = type_name
        self.msg_id = msg_id


@dataclass(frozen=True)
class Envelope:
    version: int
    id: str
    sender: str
    ts: float
    msg: Message

    @property
    def type(self) -> str:
        return self.msg.TYPE


def new_id() -> str:
    return os.urandom(8).hex()


def encode(msg: Message, *, id: str, sender: str, version: int = PROTOCOL_VERSION) -> bytes:
    packed: bytes = msgpack.packb(
        {"v": version, "type": msg.TYPE, "id": id, "from": sender, "ts": time.time(), "body": body_of(msg)},
        use_bin_type=True,
    )
    return packed


def decode(frame: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Envelope:
    """Decode one frame. Version is *not* checked here: registration checks it with a reason."""
    if len(frame) > max_bytes:
        raise ProtocolError(f"frame of {len(frame)} bytes is over the {max_bytes}-byte cap")
    try:
        doc = msgpack.unpackb(frame, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises many types for garbage
        raise ProtocolError(f"not a msgpack envelope ({type(exc).__name__})") from None
    if not isinstance(doc, dict):
        raise ProtocolError("envelope is not a map")
    version, type_name, msg_id, sender, ts = (doc.get(k) for k in ("v", "type", "id", "from", "ts"))
    if not isinstance(version, int) or isinstance(version, bool):
        raise ProtocolError("envelope has no protocol version")
    if not isinstance(type_name, str) or not isinstance(msg_id, str) or not msg_id or len(msg_id) > 64:
        raise ProtocolError("envelope has no type or id")
    if not isinstance(sender, str) or len(sender) > 256:
        raise ProtocolError("envelope has no sender")
    if not isinstance(ts, (int, float)) or isinstance(ts, bool):
        raise ProtocolError("envelope has no timestamp")
    if version != PROTOCOL_VERSION:
        raise VersionMismatch(version, type_name, msg_id)
    return Envelope(version=version, id=msg_id, sender=sender, ts=float(ts), msg=build(type_name, doc.get("body", {})))
