"""What may reach a terminal: control characters shown as escapes, ordinary Unicode kept.

Why one gate: the CLI prints strings that others chose (slice descriptions, node names, sites
and cities an agent reports, reasons an agent or controller gives). An escape sequence among
them could recolour, move the cursor, retitle the window or hide text, and a bidi override
could reorder what the reader sees. ``escaped_output`` wraps the CLI's stdout and stderr so
that every line printed passes ``printable_lines``; new print sites need no care of their own.

Raw sliver output (``slicemesh exec`` and ``logs``) is written to the byte streams underneath
and passes unchanged, as ``ssh`` and ``docker logs`` do: it is the program's own output.
"""

from __future__ import annotations

import re
import sys
import unicodedata
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO, cast

# C0 and C1 controls and DEL; lone surrogates (unprintable, and unencodable as UTF-8); line and
# paragraph separators (some terminals break lines there); the bidirectional controls.
_OTHERS = "\x7f-\x9f\ud800-\udfff\u2028\u2029\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
_ANY = re.compile(f"[\x00-\x1f{_OTHERS}]")
_BUT_NEWLINE = re.compile(f"[\x00-\x09\x0b-\x1f{_OTHERS}]")
_SHORT = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _escape(match: re.Match[str]) -> str:
    ch = match.group()
    if ch in _SHORT:
        return _SHORT[ch]
    return f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}"


def printable(text: str) -> str:
    """``text`` with every control character as a visible escape (``\\x1b``, ``\\n``, ``\\u202e``)."""
    return _ANY.sub(_escape, text)


def printable_lines(text: str) -> str:
    """As ``printable`` but newlines stay: for whole blocks of output such as tables."""
    return _BUT_NEWLINE.sub(_escape, text)


def find_unprintable(text: str) -> str | None:
    """Why ``text`` cannot be shown as it is (the first offending character), or None."""
    match = _ANY.search(text)
    if match is None:
        return None
    ch = match.group()
    name = "a lone surrogate" if unicodedata.category(ch) == "Cs" else unicodedata.name(ch, "a control character").lower()
    return f"contains U+{ord(ch):04X} ({name}) at character {match.start() + 1}"


class _Escaping:
    """A text stream that escapes what it is given, then writes it to ``raw``."""

    def __init__(self, raw: TextIO) -> None:
        self._raw = raw

    def write(self, text: str) -> int:
        safe = printable_lines(text)
        try:
            self._raw.write(safe)
        except UnicodeEncodeError:  # a terminal that is not UTF-8: escape what it cannot show
            encoding = getattr(self._raw, "encoding", None) or "ascii"
            self._raw.write(safe.encode(encoding, "backslashreplace").decode(encoding))
        return len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:  # flush, buffer (raw bytes), isatty, fileno ...
        return getattr(self._raw, name)


@contextmanager
def escaped_output() -> Iterator[None]:
    """Route ``sys.stdout`` and ``sys.stderr`` through ``printable_lines`` while inside."""
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = cast(TextIO, _Escaping(sys.stdout)), cast(TextIO, _Escaping(sys.stderr))
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved


def clear_screen() -> None:
    """The one escape sequence the CLI itself sends (``top``), past the gate on purpose."""
    raw = sys.stdout._raw if isinstance(sys.stdout, _Escaping) else sys.stdout
    raw.write("\033[H\033[2J")
