"""Hostile frames for the fuzz tests: a seeded generator of what an attacker or a broken peer
can put on a ZeroMQ connection to a slicemesh daemon.

Pure and deterministic for a seed (no sockets): the test decides who sends what. Kinds:

* ``random``: random bytes, 0 to 2 KiB; ``empty``: a zero-length frame.
* ``truncated``: a captured valid frame cut short.
* ``oversized``: one byte over the daemon's frame cap (a valid envelope around a long string).
* ``shape``: valid msgpack of the wrong shape (any value but an envelope).
* ``body``: a well-formed envelope of a known type with a random body.
* ``mutated``: a captured valid frame with one envelope or body field replaced or removed.
* ``deep``: nesting 100 to 100,000 levels deep, bare and inside an envelope's body.
* ``huge``: msgpack headers that declare 2^32 - 1 items or bytes, bare and inside a body.
* ``unknown``: envelopes of unknown types, odd versions and bad header fields.
* ``replay``: a captured valid frame, verbatim.
* ``cross``: a valid message the sender's principal may not send (agent messages from a
  user key and the reverse), given by the test.
* ``multipart``: two or three frames where one is expected.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgpack

from slices.protocol import PROTOCOL_VERSION, REGISTRY, load_all

KINDS: dict[str, int] = {
    "random": 12,
    "empty": 1,
    "truncated": 10,
    "oversized": 1,
    "shape": 10,
    "body": 14,
    "mutated": 16,
    "deep": 4,
    "huge": 6,
    "unknown": 8,
    "replay": 8,
    "cross": 8,
    "multipart": 2,
}

_ODD_STRINGS = ["", "../../../etc/passwd", "\x1b[2J\x1b[31mred", "a" * 300, "\u202e\u0000nul", "inf", "NaN", "ok", "💥" * 10, "x\ny"]
_ODD_NUMBERS: list[Any] = [0, -1, 2**63 - 1, -(2**63), 2**64 - 1, float("nan"), float("inf"), float("-inf"), 1e308, -0.0, 5e-324, True, False]


@dataclass(frozen=True)
class Hostile:
    kind: str
    frames: list[bytes]


def _deep_bytes(depth: int) -> bytes:
    return b"\x91" * depth + b"\xc0"  # [[[...[nil]...]]]


_HUGE_HEADERS = [
    b"\xdd\xff\xff\xff\xff",  # array 32: 2^32 - 1 items
    b"\xdf\xff\xff\xff\xff",  # map 32
    b"\xdb\xff\xff\xff\xff",  # str 32: 2^32 - 1 bytes
    b"\xc6\xff\xff\xff\xff",  # bin 32
    b"\xc9\xff\xff\xff\xff\x05",  # ext 32
    b"\xdc\xff\xff",  # array 16: 65,535 items
    b"\xde\xff\xff",  # map 16
]


class Generator:
    """``next()`` gives one hostile message; ``captured`` are valid frames seen on the wire,
    ``cross`` valid messages the sender's principal may not send."""

    def __init__(self, seed: int, *, captured: Sequence[bytes], cross: Sequence[bytes], frame_cap: int, kinds: dict[str, int] | None = None) -> None:
        self.rng = random.Random(seed)
        self.captured = list(captured)
        self.cross = list(cross)
        self.frame_cap = frame_cap
        weights = dict(kinds or KINDS)
        if not self.cross:
            weights.pop("cross", None)
        if not self.captured:
            for k in ("truncated", "mutated", "replay"):
                weights.pop(k, None)
        self.kinds = list(weights)
        self.weights = list(weights.values())
        load_all()
        self.types = sorted(REGISTRY)

    def next(self) -> Hostile:
        kind = self.rng.choices(self.kinds, self.weights)[0]
        frames: list[bytes] = getattr(self, f"_{kind}")()
        return Hostile(kind, frames)

    # ---- values --------------------------------------------------------------------------

    def value(self, depth: int = 0) -> Any:
        r = self.rng.random()
        if depth > 3 or r < 0.45:
            return self.scalar()
        if r < 0.7:
            return [self.value(depth + 1) for _ in range(self.rng.randrange(0, 5))]
        return {self.key(): self.value(depth + 1) for _ in range(self.rng.randrange(0, 5))}

    def key(self) -> str:
        return self.rng.choice(["name", "node", "spec", "id", "slivers", "generation", "cpu", "memory", "env", "argv", self.rng.choice(_ODD_STRINGS)])

    def scalar(self) -> Any:
        r = self.rng.random()
        if r < 0.25:
            return self.rng.choice(_ODD_NUMBERS)
        if r < 0.45:
            return self.rng.choice(_ODD_STRINGS)
        if r < 0.6:
            return self.rng.randbytes(self.rng.randrange(0, 64))
        if r < 0.7:
            return None
        if r < 0.8:
            return msgpack.ExtType(self.rng.randrange(0, 128), self.rng.randbytes(8))
        if r < 0.85:
            return msgpack.Timestamp(self.rng.randrange(0, 2**32), 0)
        return self.rng.randrange(-(2**40), 2**40)

    def pack(self, doc: Any) -> bytes:
        packed: bytes = msgpack.packb(doc, use_bin_type=True)
        return packed

    def envelope(self, type_name: str, body: Any, **header: Any) -> dict[str, Any]:
        doc = {"v": PROTOCOL_VERSION, "type": type_name, "id": self.rng.randbytes(8).hex(), "from": "fuzz", "ts": 1.0e9, "body": body}
        doc.update(header)
        return doc

    def _with_raw_body(self, type_name: str, raw_body: bytes) -> bytes:
        """An envelope whose body is the given (possibly invalid) msgpack bytes."""
        head = self.envelope(type_name, None)
        del head["body"]
        out = bytearray([0x80 | (len(head) + 1)])
        for k, v in head.items():
            out += self.pack(k) + self.pack(v)
        return bytes(out + self.pack("body") + raw_body)

    # ---- kinds -----------------------------------------------------------------------------

    def _random(self) -> list[bytes]:
        return [self.rng.randbytes(self.rng.randrange(1, 2048))]

    def _empty(self) -> list[bytes]:
        return [b""]

    def _truncated(self) -> list[bytes]:
        frame = self.rng.choice(self.captured)
        return [frame[: self.rng.randrange(0, max(1, len(frame)))]]

    def _oversized(self) -> list[bytes]:
        return [self.pack(self.envelope("ping", {"pad": "x" * (self.frame_cap + 1)}))]

    def _shape(self) -> list[bytes]:
        doc = self.value()
        if isinstance(doc, dict) and self.rng.random() < 0.5:
            doc.update({"v": PROTOCOL_VERSION, "type": self.rng.choice(self.types)})  # almost an envelope
        return [self.pack(doc)]

    def _body(self) -> list[bytes]:
        return [self.pack(self.envelope(self.rng.choice(self.types), self.value()))]

    def _mutated(self) -> list[bytes]:
        """One field anywhere in a captured frame (envelope, body, or nested deeper) replaced
        by a random value or removed."""
        doc = msgpack.unpackb(self.rng.choice(self.captured), raw=False)
        parent: Any = doc
        key: Any = self.rng.choice(sorted(doc))
        while isinstance(parent[key], (dict, list)) and parent[key] and self.rng.random() < 0.7:
            parent = parent[key]
            key = self.rng.choice(sorted(parent)) if isinstance(parent, dict) else self.rng.randrange(len(parent))
        if isinstance(parent, dict) and self.rng.random() < 0.2:
            del parent[key]
        else:
            parent[key] = self.value(depth=2)
        return [self.pack(doc)]

    def _deep(self) -> list[bytes]:
        depth = self.rng.choice([100, 600, 1100, 10_000, 100_000])
        if self.rng.random() < 0.5:
            return [_deep_bytes(depth)]
        return [self._with_raw_body(self.rng.choice(self.types), b"\x81\xa4spec" + _deep_bytes(depth))]

    def _huge(self) -> list[bytes]:
        header = self.rng.choice(_HUGE_HEADERS) + self.rng.randbytes(self.rng.randrange(0, 16))
        if self.rng.random() < 0.4:
            return [header]
        return [self._with_raw_body(self.rng.choice(self.types), header)]

    def _unknown(self) -> list[bytes]:
        r = self.rng.random()
        if r < 0.3:
            return [self.pack(self.envelope(self.rng.choice(_ODD_STRINGS) or "frobnicate", {}))]
        if r < 0.5:
            return [self.pack(self.envelope("ping", {}, v=self.rng.choice(["3.0", "1.9", 1, "2", "2.0.0", "99999.0", None, 2.0, "\u0662.\u0660"])))]
        field = self.rng.choice(["id", "from", "ts", "type"])
        return [self.pack(self.envelope(self.rng.choice(self.types), {}, **{field: self.scalar()}))]

    def _replay(self) -> list[bytes]:
        return [self.rng.choice(self.captured)]

    def _cross(self) -> list[bytes]:
        return [self.rng.choice(self.cross)]

    def _multipart(self) -> list[bytes]:
        return [self._replay()[0] if self.captured else b"x", *(self.rng.randbytes(8) for _ in range(self.rng.randrange(1, 3)))]
