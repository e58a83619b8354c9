"""Running things inside slivers: ``exec`` and ``logs``, relayed controller <-> agent.

A client asks the controller (``ExecSliver``, ``SliverLogs``); the controller passes the
request on to the authenticated agent of the sliver's node (``NodeExec``, ``NodeLogs``) and
answers the client when the agent answers. Output of a running command streams back as
``ExecOutput`` notices carrying the original request's id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from slices.model import NODE_NAME, SLICE_NAME, SLIVER_ID
from slices.protocol.base import Message, message
from slices.wire import fld

MAX_EXEC_SECONDS = 24 * 3600.0
MAX_LOG_CHUNK = 512 * 1024
MAX_ARG = 64 * 1024
MAX_ARGS = 4096
MAX_INPUT_CHUNK = 64 * 1024
MAX_TERM = 10_000  # rows or columns of a terminal window


@dataclass(frozen=True, kw_only=True)
class ExecResult:
    exit_code: int = fld(lo=-255, hi=255)
    node: str = fld(pattern=NODE_NAME)
    sliver: str = fld(pattern=SLIVER_ID)


@dataclass(frozen=True, kw_only=True)
class LogChunk:
    data: bytes = fld(max_len=MAX_LOG_CHUNK)
    offset: int = fld(lo=0)
    node: str = fld(pattern=NODE_NAME)
    sliver: str = fld(pattern=SLIVER_ID)


@message
@dataclass(frozen=True)
class ExecSliver(Message):
    """Run ``argv`` in one sliver of ``slice``; output streams as ``exec_output`` notices.

    ``stdin``: input follows as ``exec_input`` notices (the last one with ``eof``); ``tty``:
    the command runs under a pseudo-terminal of ``rows`` x ``cols`` (``exec_resize`` changes
    it), its output and errors come as one stream. Without ``node`` or ``sliver`` the slice
    must have exactly one sliver."""

    TYPE = "exec_sliver"
    REPLY = ExecResult
    slice: str = fld(pattern=SLICE_NAME)
    argv: list[str] = fld(kind="data", max_len=MAX_ARG, max_items=MAX_ARGS)
    node: str | None = fld(None, pattern=NODE_NAME)
    timeout: float = fld(60.0, lo=0.1, hi=MAX_EXEC_SECONDS)
    sliver: str | None = fld(None, pattern=SLIVER_ID)
    stdin: bool = False
    tty: bool = False
    rows: int = fld(24, lo=1, hi=MAX_TERM)
    cols: int = fld(80, lo=1, hi=MAX_TERM)


@message
@dataclass(frozen=True)
class SliverLogs(Message):
    """A sliver's output from byte ``offset`` (None: the last ``limit`` bytes)."""

    TYPE = "sliver_logs"
    REPLY = LogChunk
    slice: str = fld(pattern=SLICE_NAME)
    node: str | None = fld(None, pattern=NODE_NAME)
    offset: int | None = fld(None, lo=0)
    limit: int = fld(65536, lo=1, hi=MAX_LOG_CHUNK)
    sliver: str | None = fld(None, pattern=SLIVER_ID)


@message
@dataclass(frozen=True)
class NodeExec(Message):
    """Controller -> agent: the relayed ``exec_sliver`` for one sliver on that node."""

    TYPE = "node_exec"
    REPLY = ExecResult
    SENDER = "controller"
    sliver: str = fld(pattern=SLIVER_ID)
    argv: list[str] = fld(kind="data", max_len=MAX_ARG, max_items=MAX_ARGS)
    timeout: float = fld(60.0, lo=0.1, hi=MAX_EXEC_SECONDS)
    stdin: bool = False
    tty: bool = False
    rows: int = fld(24, lo=1, hi=MAX_TERM)
    cols: int = fld(80, lo=1, hi=MAX_TERM)


@message
@dataclass(frozen=True)
class NodeLogs(Message):
    TYPE = "node_logs"
    REPLY = LogChunk
    SENDER = "controller"
    sliver: str = fld(pattern=SLIVER_ID)
    offset: int | None = fld(None, lo=0)
    limit: int = fld(65536, lo=1, hi=MAX_LOG_CHUNK)


@message
@dataclass(frozen=True)
class ExecOutput(Message):
    """A chunk of a running command's output; ``request`` is the exec's request id."""

    TYPE = "exec_output"
    REQUEST = False
    SENDER = "any"
    request: str = fld(max_len=64)
    stream: Literal["stdout", "stderr"] = fld()
    data: bytes = fld(max_len=1 << 20)


@message
@dataclass(frozen=True)
class ExecInput(Message):
    """Input for a running ``exec -i``: user -> controller -> agent; ``request`` is the exec's
    request id on that hop. ``eof`` closes the command's stdin (after ``data``)."""

    TYPE = "exec_input"
    REQUEST = False
    SENDER = "any"
    request: str = fld(max_len=64)
    data: bytes = fld(b"", max_len=MAX_INPUT_CHUNK)
    eof: bool = False


@message
@dataclass(frozen=True)
class ExecResize(Message):
    """The user's terminal changed size: the ``exec -t`` command's terminal follows."""

    TYPE = "exec_resize"
    REQUEST = False
    SENDER = "any"
    request: str = fld(max_len=64)
    rows: int = fld(lo=1, hi=MAX_TERM)
    cols: int = fld(lo=1, hi=MAX_TERM)
