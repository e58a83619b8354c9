"""The field checker: walks a decoded document collecting (path, reason) pairs.

Every check names the field's path and says what would be accepted, so one run reports every
problem of a document. Values are quoted cut short: an error line must stay one readable line
even when the value is 100 KiB of text.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from slices import geo
from slices.terminal import find_unprintable


def shown(value: object, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters: safe to put in a one-line error."""
    if isinstance(value, (dict, list)):
        return kind(value)
    try:
        text = repr(value)
    except ValueError:  # int -> str refuses beyond 4300 digits
        return "<a number too long to show>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def kind(value: object) -> str:
    if value is None:
        return "nothing"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "a number", float: "a number"}.get(type(value), type(value).__name__)


def join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def closest(word: str, options: tuple[str, ...]) -> str | None:
    match = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return match[0] if match else None


class Checker:
    """Collects (path, reason) pairs while walking a document."""

    def __init__(self) -> None:
        self.errors: list[tuple[str, str]] = []

    def fail(self, path: str, reason: str) -> None:
        self.errors.append((path, reason))

    def mapping(self, doc: object, path: str, allowed: tuple[str, ...], required: tuple[str, ...] = ()) -> dict[str, Any]:
        if not isinstance(doc, Mapping):
            self.fail(path, f"must be a mapping, got {kind(doc)}")
            return {}
        out: dict[str, Any] = {}
        for key, value in doc.items():
            if key not in allowed:
                hint = closest(str(key), allowed) if isinstance(key, str) else None
                self.fail(join(path, str(key)[:40]), "unknown key" + (f" (did you mean {hint!r}?)" if hint else f"; allowed: {', '.join(allowed)}"))
            else:
                out[key] = value
        for key in required:
            if key not in doc:
                self.fail(join(path, key), "required")
        return out

    def convert(self, path: str, value: object, parse: Callable[[object], Any]) -> Any:
        try:
            return parse(value)
        except ValueError as exc:
            self.fail(path, str(exc))
            return None

    def string(self, path: str, value: object, pattern: re.Pattern[str] | None = None, what: str = "") -> str | None:
        if not isinstance(value, str):
            self.fail(path, f"must be a string, got {kind(value)}")
            return None
        if pattern is not None and not pattern.match(value):
            self.fail(path, f"{shown(value)} is not a valid {what or 'value'} (must match {pattern.pattern})")
            return None
        return value

    def text(self, path: str, value: object, max_chars: int) -> str | None:
        """Free text people read (a description, a city): not empty, bounded, no control characters."""
        if not isinstance(value, str):
            self.fail(path, f"must be a string, got {kind(value)}")
            return None
        if not value.strip():
            self.fail(path, "must not be empty")
            return None
        if len(value) > max_chars:
            self.fail(path, f"is {len(value)} characters, more than the {max_chars} allowed")
            return None
        bad = find_unprintable(value)
        if bad is not None:
            self.fail(path, f"{bad}: control characters, including newlines and tabs, are not allowed here")
            return None
        return value

    def choice(self, path: str, value: object, choices: tuple[str, ...]) -> str | None:
        if value not in choices:
            self.fail(path, f"{shown(value)} is not one of: {', '.join(choices)}")
            return None
        return str(value)

    def integer(self, path: str, value: object, low: int, high: int) -> int | None:
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(path, f"must be a whole number, got {kind(value)}")
            return None
        if not low <= value <= high:
            self.fail(path, f"must be between {low} and {high}, got {value}")
            return None
        return value

    def number(self, path: str, value: object, low: float, high: float, *, open_low: bool = False) -> float | None:
        """A finite number in [low, high] (or (low, high]); NaN compares false and must not pass."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(path, f"must be a number, got {kind(value)}")
            return None
        if isinstance(value, float) and not math.isfinite(value):
            self.fail(path, f"must be a finite number, got {value}")
            return None
        if (value <= low if open_low else value < low) or value > high:
            self.fail(path, f"must be {'>' if open_low else '>='} {low:g} and <= {high:g}, got {value:g}")
            return None
        return float(value)

    def country(self, path: str, value: object) -> str | None:
        code = value.upper() if isinstance(value, str) else value
        if not geo.is_country(code):
            self.fail(path, f"{shown(value)} is not an ISO 3166 alpha-2 country code (e.g. US, JP, DE)")
            return None
        return str(code)
