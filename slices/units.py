"""Quantities and units: CPU cores, bytes, bits per second, durations.

Parsers take what a person writes in YAML and return plain numbers; they raise
``ValueError`` with a message that says what is accepted, so the caller can add the path.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from fractions import Fraction

from slices.limits import INT_MAX, wire_int

_BYTES = {"": 1, "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "Ti": 1024**4}
_BITS = {"Kbit": 1000, "Mbit": 1000**2, "Gbit": 1000**3}
_SECONDS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}

_NUM = r"(\d+(?:\.\d+)?)"
_BYTES_RE = re.compile(rf"^{_NUM}\s*(Ki|Mi|Gi|Ti)?$")
_BITS_RE = re.compile(rf"^{_NUM}\s*(Kbit|Mbit|Gbit)$")
_DURATION_RE = re.compile(r"^(\d+)\s*([mhdw])$")
_MILLICPU_RE = re.compile(r"^(\d+)m$")
#: Characters in a written quantity: enough for any sane one, and int() never sees 4300 digits.
MAX_QUANTITY_CHARS = 40


def _text(value: str, what: str) -> str:
    text = value.strip()
    if len(text) > MAX_QUANTITY_CHARS:
        raise ValueError(f"{value[:20]!r}... is too long to be {what} (at most {MAX_QUANTITY_CHARS} characters)")
    return text


def _number(value: object) -> int | float | None:
    """A YAML number that is finite and fits in 64 bits; None for anything that is not a number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{value} is not a finite number")
    if isinstance(value, int) and not wire_int(value):
        raise ValueError("the number does not fit in 64 bits")
    return value


def _bounded(n: int, value: object, minimum: int, maximum: int, fmt: Callable[[int], str]) -> int:
    """``n`` if within [minimum, maximum]; else the limit it broke, in the unit people write."""
    if n < minimum:
        raise ValueError(f"must be at least {fmt(minimum)}, got {value!r}" if minimum > 1 else f"must be more than zero, got {value!r}")
    if n > maximum:
        raise ValueError(f"must be at most {fmt(maximum)}, got {value!r}")
    return n


def parse_cpu(value: object, *, minimum: float = 0.0, maximum: float = float(INT_MAX)) -> float:
    """Cores as a number (``0.5``, ``2``) or millicores (``"500m"``); must be > 0."""
    how = f"{value!r} is not a CPU amount: use cores (0.5, 2) or millicores (500m)"
    number = _number(value)
    if number is not None:
        cores = float(number)
    elif isinstance(value, str):
        text = _text(value, "a CPU amount")
        if _MILLICPU_RE.match(text):
            cores = int(text[:-1]) / 1000
        else:
            try:
                cores = float(text)
            except ValueError:
                raise ValueError(how) from None
    else:
        raise ValueError(how)
    if not math.isfinite(cores):
        raise ValueError(f"{value!r} is not a finite number")
    if cores <= 0:
        raise ValueError(f"must be > 0 cores, got {value!r}")
    if cores < minimum:
        raise ValueError(f"must be at least {format_cpu(minimum)} cores ({minimum * 1000:g}m), got {value!r}")
    if cores > maximum:
        raise ValueError(f"must be at most {format_cpu(maximum)} cores, got {value!r}")
    return cores


def parse_bytes(value: object, *, minimum: int = 1, maximum: int = INT_MAX) -> int:
    """Bytes as an integer or with a binary suffix Ki Mi Gi Ti (``256Mi``); must be > 0."""
    number = _number(value)
    if number is not None:
        if isinstance(number, float) and not number.is_integer():
            raise ValueError(f"must be a whole number of bytes > 0, got {value!r}")
        amount = Fraction(int(number))
    elif isinstance(value, str):
        m = _BYTES_RE.match(_text(value, "a size"))
        if not m:
            raise ValueError(f"{value!r} is not a size: use bytes or Ki Mi Gi Ti (e.g. 256Mi, 1Gi)")
        amount = Fraction(m.group(1)) * _BYTES[m.group(2) or ""]
    else:
        raise ValueError(f"{value!r} is not a size: use bytes or Ki Mi Gi Ti (256Mi)")
    if amount.denominator != 1:
        raise ValueError(f"{value!r} is not a whole number of bytes")
    return _bounded(int(amount), value, minimum, maximum, format_bytes)


def parse_bandwidth(value: object, *, maximum: int = INT_MAX) -> int:
    """Bits per second with a decimal suffix Kbit Mbit Gbit (``10Mbit``); at least 1Kbit."""
    m = _BITS_RE.match(_text(value, "a bandwidth")) if isinstance(value, str) else None
    if not m:
        raise ValueError(f"{value!r} is not a bandwidth: use Kbit Mbit Gbit (e.g. 10Mbit)")
    return _bounded(int(Fraction(m.group(1)) * _BITS[m.group(2)]), value, 1000, maximum, format_bandwidth)


def parse_duration(value: object, *, maximum: int = INT_MAX) -> int:
    """Seconds from ``<n><unit>`` with unit m h d w (``14d``, ``90m``); must be > 0."""
    m = _DURATION_RE.match(_text(value, "a duration")) if isinstance(value, str) else None
    if not m:
        raise ValueError(f"{value!r} is not a duration: use m h d w (e.g. 14d, 12h)")
    return _bounded(int(m.group(1)) * _SECONDS[m.group(2)], value, 1, maximum, duration_text)


def duration_text(seconds: int) -> str:
    """``4838400`` -> ``56d``: the largest unit that divides it, as ``parse_duration`` reads it."""
    for suffix, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{suffix}"
    return f"{seconds}s"


def format_bytes(n: float) -> str:
    for suffix, size in (("Ti", 1024**4), ("Gi", 1024**3), ("Mi", 1024**2), ("Ki", 1024)):
        if n >= size:
            q = n / size
            return f"{q:.0f}{suffix}" if q == int(q) else f"{q:.1f}{suffix}"
    return f"{int(n)}"


def format_bandwidth(bits: float) -> str:
    for suffix, size in (("Gbit", 1000**3), ("Mbit", 1000**2), ("Kbit", 1000)):
        if bits >= size:
            q = bits / size
            return f"{q:.0f}{suffix}" if q == int(q) else f"{q:.1f}{suffix}"
    return f"{int(bits)}bit"


def format_duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 0:
        return "-" + format_duration(-seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes}m"
    return f"{minutes}m{rest % 60}s"


def format_cpu(cores: float) -> str:
    return f"{cores:g}"
