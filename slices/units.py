"""Quantities and units: CPU cores, bytes, bits per second, durations.

Parsers take what a person writes in YAML and return plain numbers; they raise
``ValueError`` with a message that says what is accepted, so the caller can add the path.
"""

from __future__ import annotations

import math
import re

_BYTES = {"": 1, "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "Ti": 1024**4}
_BITS = {"Kbit": 1000, "Mbit": 1000**2, "Gbit": 1000**3}
_SECONDS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}

_NUM = r"(\d+(?:\.\d+)?)"
_BYTES_RE = re.compile(rf"^{_NUM}\s*(Ki|Mi|Gi|Ti)?$")
_BITS_RE = re.compile(rf"^{_NUM}\s*(Kbit|Mbit|Gbit)$")
_DURATION_RE = re.compile(r"^(\d+)\s*([mhdw])$")
_MILLICPU_RE = re.compile(r"^(\d+)m$")


def parse_cpu(value: object) -> float:
    """Cores as a number (``0.5``, ``2``) or millicores (``"500m"``); must be > 0."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        cores = float(value)
    elif isinstance(value, str) and _MILLICPU_RE.match(value.strip()):
        cores = int(value.strip()[:-1]) / 1000
    elif isinstance(value, str):
        try:
            cores = float(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a CPU amount: use cores (0.5, 2) or millicores (500m)") from None
    else:
        raise ValueError(f"{value!r} is not a CPU amount: use cores (0.5, 2) or millicores (500m)")
    if not math.isfinite(cores) or cores <= 0:
        raise ValueError(f"must be > 0 cores, got {value!r}")
    return cores


def parse_bytes(value: object) -> int:
    """Bytes as an integer or with a binary suffix Ki Mi Gi Ti (``256Mi``); must be > 0."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if float(value) != int(value) or int(value) <= 0:
            raise ValueError(f"must be a whole number of bytes > 0, got {value!r}")
        return int(value)
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a size: use bytes or Ki Mi Gi Ti (256Mi)")
    m = _BYTES_RE.match(value.strip())
    if not m:
        raise ValueError(f"{value!r} is not a size: use bytes or Ki Mi Gi Ti (e.g. 256Mi, 1Gi)")
    amount = float(m.group(1)) * _BYTES[m.group(2) or ""]
    if amount < 1 or amount != int(amount):
        raise ValueError(f"{value!r} is not a whole number of bytes > 0")
    return int(amount)


def parse_bandwidth(value: object) -> int:
    """Bits per second with a decimal suffix Kbit Mbit Gbit (``10Mbit``); must be > 0."""
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a bandwidth: use Kbit Mbit Gbit (e.g. 10Mbit)")
    m = _BITS_RE.match(value.strip())
    if not m:
        raise ValueError(f"{value!r} is not a bandwidth: use Kbit Mbit Gbit (e.g. 10Mbit)")
    bits = float(m.group(1)) * _BITS[m.group(2)]
    if bits < 1000:
        raise ValueError(f"{value!r} is below 1Kbit")
    return int(bits)


def parse_duration(value: object) -> int:
    """Seconds from ``<n><unit>`` with unit m h d w (``14d``, ``90m``); must be > 0."""
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a duration: use m h d w (e.g. 14d, 12h)")
    m = _DURATION_RE.match(value.strip())
    if not m:
        raise ValueError(f"{value!r} is not a duration: use m h d w (e.g. 14d, 12h)")
    seconds = int(m.group(1)) * _SECONDS[m.group(2)]
    if seconds <= 0:
        raise ValueError(f"{value!r} must be longer than zero")
    return seconds


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
