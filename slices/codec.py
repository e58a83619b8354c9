"""The envelope: one versioned, msgpack-encoded map per ZeroMQ payload frame.

    {"v": "2.0", "type": "create_slice", "id": "9f2c...", "from": "alice",
     "ts": 1764086400.123, "body": {...}}

Replies reuse the request's ``id``. ``from`` is informational only: who sent a message is the
key its connection authenticated with, never a field. ``decode`` never trusts the bytes:
anything that is not a well-formed envelope of a known type raises ``ProtocolError`` (the
caller logs and drops it); a well-formed envelope whose body does not fit its type raises
``BadBody``, so a request still gets its one (error) reply.
"""

from __future__ import annotations

import itertools
import os
import re
import threading
import time
from dataclasses import dataclass

import msgpack

from slices.errors import ProtocolError
from slices.protocol import PROTOCOL_MAJOR, PROTOCOL_VERSION, REGISTRY, Message, build, load_all
from slices.wire import packable

DEFAULT_MAX_BYTES = 1024 * 1024
_VERSION = re.compile(r"(\d{1,4})\.(\d{1,4})")


class VersionMismatch(ProtocolError):
    """A well-formed envelope of another protocol major: refused with both versions named."""

    code = "version-mismatch"

    def __init__(self, version: str, type_name: str, msg_id: str) -> None:
        super().__init__(f"peer speaks slicemesh protocol {version}, this side speaks {PROTOCOL_VERSION} (the major versions must match)")
        self.version = version
        self.type_name = type_name
        self.msg_id = msg_id


class BadBody(ProtocolError):
    """A well-formed envelope of a known type whose body does not fit the type."""

    code = "bad-request"

    def __init__(self, reason: str, type_name: str, msg_id: str) -> None:
        super().__init__(reason)
        self.type_name = type_name
        self.msg_id = msg_id

    @property
    def is_request(self) -> bool:
        return REGISTRY[self.type_name].REQUEST


@dataclass(frozen=True)
class Envelope:
    version: str
    id: str
    sender: str
    ts: float
    msg: Message

    @property
    def type(self) -> str:
        return self.msg.TYPE


def new_id() -> str:
    return os.urandom(8).hex()


def pack_record(record: object) -> bytes:
    """One record (or any wire value) packed as ``encode`` packs it inside a message."""
    packed: bytes = msgpack.packb(record, use_bin_type=True, default=packable)
    return packed


class KeptPacked:
    """Records packed once per object and kept while that object is asked for again (by
    identity: a record is held with its bytes, so its id is not reused meanwhile). A sliver's
    spec is the same object at every push of its node's desired set, and packing it through
    the ``packable`` hook was a fifth of a push; at ``most`` records kept, all are dropped."""

    def __init__(self, most: int) -> None:
        self.most = most
        self.kept: dict[int, tuple[object, bytes]] = {}

    def __call__(self, record: object) -> bytes:
        hit = self.kept.get(id(record))
        if hit is not None and hit[0] is record:
            return hit[1]
        if len(self.kept) >= self.most:
            self.kept.clear()
        packed = pack_record(record)
        self.kept[id(record)] = (record, packed)
        return packed


# A Packed list's token: a secret of this process (no peer can put it in what it sends) and a
# serial number. Random bytes for each one were a system call for every desired set pushed.
_SECRET = os.urandom(12).hex()
_SERIAL = itertools.count()


class Packed:
    """A list of records packed as they are made, a few per loop turn (``controller/steps.py``),
    standing in for that list in a reply: ``encode`` writes the array they are without packing
    them again. Packing a 10,000-row reply in one go held the controller's loop 0.3-0.6 s
    (bench responsiveness: the largest single cause of slow pings); packed a chunk of rows per
    step, what is left at the end is copying bytes. Only ``encode`` reads one: it never reaches
    a decoder, which sees a plain array."""

    __slots__ = ("items", "token")

    def __init__(self) -> None:
        self.items: list[bytes] = []
        self.token = f"\x00packed-{_SECRET}-{next(_SERIAL)}"  # what encode finds and replaces

    def append(self, record: object) -> None:
        """``record`` packed; ``bytes`` are a row packed already (``controller/rows.py``)."""
        self.items.append(record if type(record) is bytes else pack_record(record))

    def __len__(self) -> int:
        return len(self.items)


_splices = threading.local()
_ARRAY = msgpack.Packer(use_bin_type=True)  # for array headers


def _default(obj: object) -> object:
    if type(obj) is Packed:
        _splices.found.append(obj)
        return obj.token
    return packable(obj)


def encode(msg: Message, *, id: str, sender: str, version: str = PROTOCOL_VERSION) -> bytes:
    _splices.found = []
    packed: bytes = msgpack.packb(
        {"v": version, "type": msg.TYPE, "id": id, "from": sender, "ts": time.time(), "body": msg},
        use_bin_type=True,
        default=_default,
    )
    for rows in _splices.found:  # each stands where its token was packed: put the array there
        token = msgpack.packb(rows.token, use_bin_type=True)
        at = packed.index(token)
        packed = b"".join((packed[:at], _ARRAY.pack_array_header(len(rows.items)), *rows.items, packed[at + len(token) :]))
    return packed


def _major(version: object) -> tuple[int, str] | None:
    """(major, as shown) of an envelope's version; protocol 1 peers sent a plain integer."""
    if isinstance(version, int) and not isinstance(version, bool) and 0 <= version < 10_000:
        return version, str(version)
    if isinstance(version, str):
        m = _VERSION.fullmatch(version)
        if m:
            return int(m.group(1)), version
    return None


def decode(frame: bytes | memoryview, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Envelope:
    """Decode one frame; an envelope of another major raises ``VersionMismatch``."""
    if len(frame) > max_bytes:
        raise ProtocolError(f"frame of {len(frame)} bytes is over the {max_bytes}-byte cap")
    try:
        doc = msgpack.unpackb(frame, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises many types for garbage
        raise ProtocolError(f"not a msgpack envelope ({type(exc).__name__})") from None
    if not isinstance(doc, dict):
        raise ProtocolError("envelope is not a map")
    version, type_name, msg_id, sender, ts = (doc.get(k) for k in ("v", "type", "id", "from", "ts"))
    major = _major(version)
    if major is None:
        raise ProtocolError("envelope has no protocol version")
    if not isinstance(type_name, str) or not isinstance(msg_id, str) or not msg_id or len(msg_id) > 64 or len(type_name) > 64:
        raise ProtocolError("envelope has no type or id")
    if not isinstance(sender, str) or len(sender) > 256:
        raise ProtocolError("envelope has no sender")
    if isinstance(ts, bool) or not isinstance(ts, (int, float)):
        raise ProtocolError("envelope has no timestamp")
    if major[0] != PROTOCOL_MAJOR:
        raise VersionMismatch(major[1], type_name, msg_id)
    if type_name not in REGISTRY:
        load_all()  # a type of a topic this process has not used yet (slices/protocol/__init__.py)
        if type_name not in REGISTRY:
            raise ProtocolError(f"unknown message type {type_name!r}")
    try:
        msg = build(type_name, doc.get("body", {}))
    except ProtocolError as exc:
        raise BadBody(exc.reason, type_name, msg_id) from None
    return Envelope(version=major[1], id=msg_id, sender=sender, ts=float(ts), msg=msg)
