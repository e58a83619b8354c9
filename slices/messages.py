"""Every message type on the wire: one frozen dataclass each, one registry.

A *request* gets exactly one reply (``Ok`` or ``Error``, echoing its id); a *notice* gets
none. Bodies are plain maps; nested records (nodes, slivers) are converted by their handlers.
The registry maps the type name on the wire to its class; dispatch tables key on the class.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar

from slices.errors import ProtocolError

PROTOCOL_VERSION = 1


@dataclass(frozen=True)
class Message:
    TYPE: ClassVar[str] = ""
    REQUEST: ClassVar[bool] = True  # False for notices and replies


REGISTRY: dict[str, type[Message]] = {}


def message(cls: type[Message]) -> type[Message]:
    """Class decorator: register a message type under its ``TYPE``."""
    if not cls.TYPE or cls.TYPE in REGISTRY:
        raise ValueError(f"bad or duplicate message type {cls.TYPE!r}")
    REGISTRY[cls.TYPE] = cls
    return cls


# ---- replies -------------------------------------------------------------------------------


@message
@dataclass(frozen=True)
class Ok(Message):
    TYPE = "ok"
    REQUEST = False
    result: dict[str, Any] = field(default_factory=dict)


@message
@dataclass(frozen=True)
class Error(Message):
    TYPE = "error"
    REQUEST = False
    code: str
    reason: str


# ---- agent -> controller -------------------------------------------------------------------


@message
@dataclass(frozen=True)
class Register(Message):
    """An agent introduces its node; the reply carries heartbeat settings."""

    TYPE = "register"
    node: dict[str, Any]
    slivers: list[Any] = field(default_factory=list)  # SliverStatus maps: what runs now
    generation: int = 0  # the desired-set generation the agent last applied


@message
@dataclass(frozen=True)
class Heartbeat(Message):
    """Periodic proof of life with usage; the reply is the controller's heartbeat."""

    TYPE = "heartbeat"
    node: str
    generation: int
    slivers: list[Any] = field(default_factory=list)
    usage: dict[str, Any] = field(default_factory=dict)  # node-level Usage map


@message
@dataclass(frozen=True)
class Report(Message):
    """Actual sliver states right after a reconcile (a notice: heartbeats repeat it)."""

    TYPE = "report"
    REQUEST = False
    node: str
    generation: int
    slivers: list[Any] = field(default_factory=list)


# ---- controller -> agent -------------------------------------------------------------------


@message
@dataclass(frozen=True)
class Desired(Message):
    """The node's full desired sliver set at ``generation`` (a notice, resent until applied)."""

    TYPE = "desired"
    REQUEST = False
    generation: int
    slivers: list[Any] = field(default_factory=list)  # SliverSpec maps


# ---- clients -> controller -----------------------------------------------------------------


@message
@dataclass(frozen=True)
class CreateSlice(Message):
    TYPE = "create_slice"
    spec: dict[str, Any]
    dry_run: bool = False
    owner: str | None = None


@message
@dataclass(frozen=True)
class ListSlices(Message):
    TYPE = "list_slices"


@message
@dataclass(frozen=True)
class ShowSlice(Message):
    TYPE = "show_slice"
    name: str


@message
@dataclass(frozen=True)
class DeleteSlice(Message):
    TYPE = "delete_slice"
    name: str


@message
@dataclass(frozen=True)
class RenewSlice(Message):
    TYPE = "renew_slice"
    name: str
    seconds: int


@message
@dataclass(frozen=True)
class ListNodes(Message):
    TYPE = "list_nodes"


@message
@dataclass(frozen=True)
class ListSlivers(Message):
    """Every sliver with its node, state and latest usage (for ``slicemesh top``)."""

    TYPE = "list_slivers"


@message
@dataclass(frozen=True)
class ListSites(Message):
    TYPE = "list_sites"


@message
@dataclass(frozen=True)
class Ping(Message):
    """Liveness and version check for clients (``slicemesh`` prints it with ``--verbose``)."""

    TYPE = "ping"


# ---- running things inside slivers (relayed controller <-> agent) ---------------------------


@message
@dataclass(frozen=True)
class ExecSliver(Message):
    """Client -> controller: run ``argv`` in one sliver of ``slice``; output streams back as
    ``exec_output`` notices carrying this request's id, then one reply with the exit code."""

    TYPE = "exec_sliver"
    slice: str
    argv: list[Any]
    node: str | None = None
    timeout: float = 60.0


@message
@dataclass(frozen=True)
class SliverLogs(Message):
    """Client -> controller: a sliver's output from byte ``offset`` (None: the last ``limit``)."""

    TYPE = "sliver_logs"
    slice: str
    node: str | None = None
    offset: int | None = None
    limit: int = 65536


@message
@dataclass(frozen=True)
class NodeExec(Message):
    """Controller -> agent: the relayed ``exec_sliver`` for one sliver on that node."""

    TYPE = "node_exec"
    sliver: str
    argv: list[Any]
    timeout: float = 60.0


@message
@dataclass(frozen=True)
class NodeLogs(Message):
    TYPE = "node_logs"
    sliver: str
    offset: int | None = None
    limit: int = 65536


@message
@dataclass(frozen=True)
class ExecOutput(Message):
    """A chunk of a running command's output (a notice); ``request`` is the exec's request id."""

    TYPE = "exec_output"
    REQUEST = False
    request: str
    stream: str
    data: bytes


# ---- body checking -------------------------------------------------------------------------


_FIELDS: dict[type[Message], tuple[tuple[str, Any, bool], ...]] = {}


def _fields(cls: type[Message]) -> tuple[tuple[str, Any, bool], ...]:
    if cls in _FIELDS:
        return _FIELDS[cls]
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        out.append((f.name, hints[f.name], required))
    _FIELDS[cls] = tuple(out)
    return _FIELDS[cls]


def _accepts(hint: Any, value: object) -> bool:
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        return any(_accepts(h, value) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is Any:
        return True
    base = origin or hint
    if base is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if base is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, base)


def build(type_name: str, body: object) -> Message:
    """Make a typed message from a wire type and body; unknown extra fields are ignored."""
    cls = REGISTRY.get(type_name)
    if cls is None:
        raise ProtocolError(f"unknown message type {type_name!r}")
    if not isinstance(body, dict):
        raise ProtocolError(f"{type_name}: body must be a map")
    kwargs = {}
    for name, hint, required in _fields(cls):
        if name not in body:
            if required:
                raise ProtocolError(f"{type_name}: missing field {name!r}")
            continue
        value = body[name]
        if not _accepts(hint, value):
            raise ProtocolError(f"{type_name}: field {name!r} has the wrong type ({type(value).__name__})")
        kwargs[name] = value
    return cls(**kwargs)


def body_of(msg: Message) -> dict[str, Any]:
    return {f.name: getattr(msg, f.name) for f in dataclasses.fields(msg)}
