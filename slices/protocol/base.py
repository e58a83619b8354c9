"""What every message shares: the base class, the registry, replies and the protocol version.

A *request* names its reply type (``REPLY``) and gets exactly one reply: ``Ok`` carrying
that type, or ``Error``. A *notice* gets none. The registry maps the type name on the wire to
its class; the controller's dispatch table keys on the class.

The version is ``major.minor``: peers of one major understand each other (a newer minor only
adds optional fields, which older peers ignore), so a cluster can be upgraded node by node.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from slices.errors import ProtocolError
from slices.wire import decode, fld, to_wire

PROTOCOL_MAJOR = 2
PROTOCOL_MINOR = 10
PROTOCOL_VERSION = f"{PROTOCOL_MAJOR}.{PROTOCOL_MINOR}"


@dataclass(frozen=True)
class Message:
    TYPE: ClassVar[str] = ""
    REQUEST: ClassVar[bool] = True  # False for notices and replies
    #: The record an ``Ok`` reply to this request carries.
    REPLY: ClassVar[type[Any] | None] = None
    #: Who may send it: "agent" (node agents), "user" (people), "any" or "controller".
    SENDER: ClassVar[str] = "user"


REGISTRY: dict[str, type[Message]] = {}


def message(cls: type[Message]) -> type[Message]:
    """Class decorator: register a message type under its ``TYPE``."""
    if not cls.TYPE or cls.TYPE in REGISTRY:
        raise ValueError(f"bad or duplicate message type {cls.TYPE!r}")
    if cls.REQUEST and cls.REPLY is None:
        raise ValueError(f"request {cls.TYPE} names no reply type")
    REGISTRY[cls.TYPE] = cls
    return cls


@message
@dataclass(frozen=True)
class Ok(Message):
    """The one success reply; ``result`` is the request's ``REPLY`` record as a map."""

    TYPE = "ok"
    REQUEST = False
    SENDER = "any"
    result: dict[str, Any] = fld(factory=dict)


@message
@dataclass(frozen=True)
class Error(Message):
    """The one failure reply: a stable ``code``, one human line, optional structured details."""

    TYPE = "error"
    REQUEST = False
    SENDER = "any"
    code: str = fld(max_len=64)
    reason: str = fld(kind="text", max_len=8192)
    details: dict[str, Any] | None = None


def build(type_name: str, body: object) -> Message:
    """A typed message from a wire type and body; unknown extra fields are ignored."""
    cls = REGISTRY.get(type_name)
    if cls is None:
        raise ProtocolError(f"unknown message type {type_name[:64]!r}")
    return decode(cls, body, type_name)


def body_of(msg: Message) -> dict[str, Any]:
    body: dict[str, Any] = to_wire(msg)
    return body


def result_of(request: Message, ok: Ok) -> Any:
    """The typed reply record inside ``ok``, checked against what ``request`` expects."""
    assert request.REPLY is not None
    return decode(request.REPLY, ok.result, f"{request.TYPE} reply")
