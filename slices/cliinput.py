"""What the CLI takes from the person typing, bounded before anything is sent.

Why here as well as in the controller: a request over the controller's 1 MiB frame cap is
dropped unanswered, so an oversize spec or command would look like a dead controller ("is it
running?") after the whole timeout; a NaN timeout would retry forever; a number over 64 bits
kills the encoder with a traceback. Each check below fails at once, with one line naming the
limit. Spec contents are bounded by slices/spec.py (the controller runs the same parser).
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections.abc import Callable
from functools import partial

from slices.checker import shown
from slices.errors import SliceMeshError, SpecError
from slices.limits import MAX_LIFETIME, MAX_YAML_BYTES, KiB, human_bytes
from slices.model import SLIVER_ID
from slices.spec import NAME_RE, NODE_RE
from slices.units import parse_duration

#: ``exec``: arguments and bytes of one command (each argument counts its bytes plus one).
#: Linux takes at most 128 KiB in one argument; the whole request stays far below 1 MiB.
MAX_EXEC_ARGS, MAX_EXEC_BYTES = 4096, 128 * KiB
#: tcp://HOST:PORT with a host name, IPv4 or [IPv6] address; or ipc://PATH (sun_path holds 107 bytes).
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?"
_URL_RE = re.compile(rf"^(?:tcp://(?:{_LABEL}(?:\.{_LABEL}){{0,126}}|\[[0-9A-Fa-f:.%]{{2,64}}\]):(?P<port>\d{{1,5}})|ipc://[!-~]{{1,107}})$")


def read_spec(name: str) -> str:
    """The spec file (``-``: stdin) as text; refused unread past ``MAX_YAML_BYTES``, or if not UTF-8."""
    try:
        if name == "-":
            data = sys.stdin.buffer.read(MAX_YAML_BYTES + 1)
        else:
            with open(name, "rb") as f:
                data = f.read(MAX_YAML_BYTES + 1)
    except OSError as exc:
        raise SliceMeshError(f"cannot read {name}: {exc.strerror}") from None
    if len(data) > MAX_YAML_BYTES:
        raise SpecError("", f"{name}: more than the {human_bytes(MAX_YAML_BYTES)} a spec may be")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError("", f"{name}: not UTF-8 text (byte {exc.start + 1})") from None


def exec_argv(argv: list[str]) -> list[str]:
    """The command for ``exec``, refused if no program could receive it or it is oversize."""
    if len(argv) > MAX_EXEC_ARGS:
        raise SliceMeshError(f"exec: {len(argv)} arguments, more than the {MAX_EXEC_ARGS} allowed")
    size = sum(len(a.encode("utf-8", "surrogateescape")) + 1 for a in argv)
    if size > MAX_EXEC_BYTES:
        raise SliceMeshError(f"exec: the command is {size} bytes, more than the {human_bytes(MAX_EXEC_BYTES)} allowed")
    for a in argv:
        try:
            a.encode("utf-8")
        except UnicodeEncodeError:
            raise SliceMeshError(f"exec: argument {shown(a)} is not UTF-8 text") from None
    return argv


def renew_seconds(text: str) -> int:
    """``--for``: a duration of at most ``MAX_LIFETIME`` (a lease never runs past it from now)."""
    try:
        return parse_duration(text, maximum=MAX_LIFETIME)
    except ValueError as exc:
        raise SpecError("--for", str(exc)) from None


def controller_url(url: str | None) -> str | None:
    """``--controller`` or ``$SLICEMESH_CONTROLLER`` (None: the identity's): what the transport can connect to."""
    if url is None:
        return None
    m = _URL_RE.match(url) if url.isascii() else None
    if m is None or (m.group("port") is not None and not 1 <= int(m.group("port")) <= 65535):
        raise SliceMeshError(f"{shown(url)} is not a controller URL: use tcp://HOST:PORT (port 1-65535) or ipc://PATH")
    return url


# ---- argparse types: a bad value is a usage error before anything runs ---------------------


def _number(text: str, low: float, high: float, whole: bool) -> float:
    try:
        value = float(int(text)) if whole else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{shown(text)} is not a {'whole ' if whole else ''}number") from None
    if not math.isfinite(value) or not low <= value <= high:
        raise argparse.ArgumentTypeError(f"must be between {low:g} and {high:g}, got {shown(text)}")
    return value


def seconds(low: float, high: float) -> Callable[[str], float]:
    """A number of seconds in [low, high] (finite: NaN and inf never reach a deadline)."""
    return partial(_number, low=low, high=high, whole=False)


def whole(low: int, high: int) -> Callable[[str], int]:
    """A whole number in [low, high]."""
    return lambda text: int(_number(text, low, high, True))


def _named(pattern: re.Pattern[str], what: str, text: str) -> str:
    if not pattern.match(text):
        raise argparse.ArgumentTypeError(f"{shown(text)} is not a valid {what} (must match {pattern.pattern})")
    return text


slice_name: Callable[[str], str] = partial(_named, NAME_RE, "slice name")
node_name: Callable[[str], str] = partial(_named, NODE_RE, "node name")
sliver_id: Callable[[str], str] = partial(_named, re.compile(rf"^{SLIVER_ID}$"), "sliver id")
