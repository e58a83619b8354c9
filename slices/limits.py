"""Every bound a slice spec obeys, and the check that a decoded document can travel at all.

Why bounds: a spec is stored, sent to every node holding one of its slivers and turned into
kernel settings there. A number the wire cannot carry (msgpack and SQLite hold signed 64-bit
integers, JSON and the placement sums want finite floats) or that the kernel refuses (tc's
token-bucket rate is a 32-bit count of bytes per second) must fail at parse time, naming the
field and the limit, not later in the controller's encoder or in an agent. The sizes keep a
node's desired set (every sliver on it, command and environment included) far below the
agent's 16 MiB frame cap, and a whole spec far below the controller's 1 MiB one.

docs/spec.md lists these limits; tests/unit/test_limits.py checks the arithmetic behind them.
"""

from __future__ import annotations

import math
from typing import Any

import msgpack

from slices.terminal import printable

KiB, MiB, GiB, TiB = 1024, 1024**2, 1024**3, 1024**4

#: What msgpack, SQLite INTEGER and every 64-bit consumer agree on.
INT_MIN, INT_MAX = -(2**63), 2**63 - 1

# ---- per-sliver resources ------------------------------------------------------------------

#: 1m is the unit of millicores; 256 cores keep cgroup v1 cpu.shares (1024 per core) at its
#: kernel maximum of 262144, which is also the most runc maps to cgroup v2's cpu.weight.
MIN_CPU, MAX_CPU = 0.001, 256.0
#: 16 TiB is more than any node has; 100,000 slivers of it still sum inside 64 bits.
MIN_MEMORY, MAX_MEMORY = 4 * MiB, 16 * TiB
#: The disk is a sparse ext4 image file: 8 TiB fits the 16 TiB file-size limit of an ext4 host
#: filesystem with room to spare; below 16 MiB mkfs.ext4 leaves almost nothing usable.
MIN_DISK, MAX_DISK = 16 * MiB, 8 * TiB
#: tc tbf as pyroute2 sends it carries the rate as a 32-bit count of bytes/s (34.3 Gbit/s).
MIN_BANDWIDTH, MAX_BANDWIDTH = 1000, 32 * 1000**3
MIN_LIFETIME, MAX_LIFETIME = 60, 56 * 86400
MAX_COUNT = 100_000
#: Half the Earth's circumference, rounded up: no two points are farther apart.
MAX_KM = 20_100.0

# ---- sizes ---------------------------------------------------------------------------------

MAX_DESCRIPTION_CHARS = 1000
#: A site, city or node name in ``locations`` or ``exclude`` (the longest city name is 168).
MAX_NAME_CHARS = 200
#: ``command``: arguments and bytes (each argument counts its UTF-8 bytes plus one, as execve).
MAX_COMMAND_ARGS, MAX_COMMAND_BYTES = 128, 4 * KiB
#: ``env``: variables and bytes (``NAME=value`` plus one each, as execve).
MAX_ENV_VARS, MAX_ENV_BYTES = 64, 4 * KiB
MAX_LOCATIONS = 500
#: Names in each of ``exclude.sites``, ``exclude.countries`` and ``exclude.nodes``.
MAX_EXCLUDE_NAMES = 1000
#: The whole document as msgpack encodes it for the wire (an eighth of the 1 MiB frame cap).
MAX_SPEC_BYTES = 128 * KiB
#: YAML text, comments included, before it is parsed (specs and daemon configs alike).
MAX_YAML_BYTES = 512 * KiB
#: Nesting levels in a document; a spec uses five (placement.locations[0].near.lat).
MAX_DEPTH = 32
#: Values in a document, counting every repeat of a YAML alias (so "billion laughs" stops here).
MAX_VALUES = 20_000
#: Problems reported about one document before the rest are only counted.
MAX_REPORTED = 20


def human_bytes(n: int) -> str:
    """``131072`` -> ``128 KiB``: limits as people read them in error messages."""
    for suffix, size in (("TiB", TiB), ("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= size and n % size == 0:
            return f"{n // size} {suffix}"
    return f"{n} bytes"


def wire_int(value: int) -> bool:
    return INT_MIN <= value <= INT_MAX


_KINDS: dict[type, str] = {bytes: "bytes", set: "a set", tuple: "a tuple", frozenset: "a set"}


def _kind(value: object) -> str:
    return _KINDS.get(type(value), type(value).__name__)


def _scalar_problem(value: object) -> str | None:
    """Why one scalar cannot travel, or None; containers are walked by the caller."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return None if wire_int(value) else "number does not fit in 64 bits"
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{value} is not a finite number"
    if isinstance(value, str):
        return None if _unicode(value) else "is not valid Unicode text (it holds a lone surrogate)"
    return f"must be text, a number, true/false, a list or a mapping, got {_kind(value)}"


def _unicode(text: str) -> bool:
    """Whether ``text`` encodes as UTF-8 (no lone surrogate)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _at(path: str, key: object) -> str:
    """``path.key``, with a long or huge key cut short (str() of a 5000-digit int raises) and a
    lone surrogate in it written as its escape (it could not be printed)."""
    if isinstance(key, int) and not wire_int(key):
        shown = "<a number too large to show>"
    else:
        text = key if isinstance(key, str) else repr(key)
        text = text if _unicode(text) else printable(text)
        shown = text if len(text) <= 40 else f"{text[:40]}..."
    return f"{path}.{shown}" if path else shown


def check_document(doc: object) -> list[tuple[str, str]]:
    """Problems that make a decoded document unsafe to hold, store or send, each with its path.

    Runs before any field is read, without recursion: a document nested too deep, with too
    many values (alias bombs included) or too large is refused whole; otherwise every value
    the wire cannot carry is named. An empty list means msgpack encodes ``doc`` within
    ``MAX_SPEC_BYTES``.
    """
    problems: list[tuple[str, str]] = []
    stack: list[tuple[object, str, int]] = [(doc, "", 0)]
    values = estimate = 0
    while stack:
        value, path, depth = stack.pop()
        values += 1
        if depth > MAX_DEPTH:
            return [(path, f"nested more than {MAX_DEPTH} levels deep")]
        if values > MAX_VALUES:
            return [("", f"the document holds more than {MAX_VALUES} values (counting every repeat of a YAML alias)")]
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    problems.append((_at(path, key), f"keys must be text, got {_kind(key) if key is not None else 'nothing'}"))
                else:
                    estimate += len(key)
                    if not _unicode(key):  # YAML's "\ud800" escape makes one; the wire cannot carry it
                        problems.append((_at(path, key), "the key is not valid Unicode text (it holds a lone surrogate)"))
                stack.append((item, _at(path, key), depth + 1))
        elif isinstance(value, list):
            stack.extend((item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value))
        else:
            reason = _scalar_problem(value)
            if reason is not None:
                problems.append((path, reason))
            estimate += len(value) if isinstance(value, str) else 1
        if estimate > MAX_SPEC_BYTES:
            return [("", f"the document is larger than the {human_bytes(MAX_SPEC_BYTES)} a spec may be")]
    if problems:
        return problems
    size = len(encode(doc))
    if size > MAX_SPEC_BYTES:
        return [("", f"the document encodes to {size} bytes, more than the {human_bytes(MAX_SPEC_BYTES)} a spec may be")]
    return []


def encode(doc: Any) -> bytes:
    """The document as the wire carries it (the same msgpack options as the codec)."""
    packed: bytes = msgpack.packb(doc, use_bin_type=True)
    return packed
