"""A slice's code: uploaded by its owner to the controller's content store, fetched by the
nodes that run its slivers (docs/code.md)."""

from __future__ import annotations

from dataclasses import dataclass

from slices.migration import ENDPOINT, TOKEN
from slices.protocol.base import Message, message
from slices.wire import fld

DIGEST = r"[0-9a-f]{64}"
CHUNK = 512 * 1024  # bytes per upload or fetch message: under the controller's 1 MiB frame cap
MAX_BUNDLE = 1 << 34  # 16 GiB: the wire's bound; the controller's setting is lower


@dataclass(frozen=True)
class CodeState:
    """How much of a bundle the controller holds."""

    digest: str = fld(pattern=DIGEST)
    size: int = fld(lo=0, hi=MAX_BUNDLE)
    have: int = fld(lo=0, hi=MAX_BUNDLE)
    complete: bool = False


@message
@dataclass(frozen=True)
class UploadCode(Message):
    """Bytes ``offset``.. of bundle ``digest`` (``size`` bytes in all); no ``data``: only ask
    how much is there (an upload resumes from ``have``)."""

    TYPE = "upload_code"
    REPLY = CodeState
    digest: str = fld(pattern=DIGEST)
    size: int = fld(lo=0, hi=MAX_BUNDLE)
    offset: int = fld(0, lo=0, hi=MAX_BUNDLE)
    data: bytes = fld(b"", max_len=CHUNK)


@dataclass(frozen=True)
class CodeChunk:
    """Bytes ``offset``.. of a bundle; or, with no ``data``, where the rest comes from: a
    ``peer`` agent that holds it (it connects to the port the fetch offered), or nowhere yet
    (``wait`` seconds, then ask again: enough nodes fetch it from the controller already)."""

    digest: str = fld(pattern=DIGEST)
    offset: int = fld(lo=0, hi=MAX_BUNDLE)
    size: int = fld(lo=0, hi=MAX_BUNDLE)
    data: bytes = fld(b"", max_len=CHUNK)
    peer: str = fld("", max_len=128)
    wait: float = fld(0.0, lo=0, hi=60)


@message
@dataclass(frozen=True)
class FetchCode(Message):
    """An agent asks for bytes ``offset``.. of a bundle one of its slivers needs."""

    TYPE = "fetch_code"
    REPLY = CodeChunk
    SENDER = "agent"
    node: str = fld(max_len=128)
    digest: str = fld(pattern=DIGEST)
    offset: int = fld(0, lo=0, hi=MAX_BUNDLE)
    port: int = fld(0, lo=0, hi=65535)  # where this node listens for the bundle from a peer (0: the controller only)
    token: str = fld("", pattern=f"({TOKEN})?")  # what that peer must send first


@message
@dataclass(frozen=True)
class PushCode(Message, CodeChunk):
    """A chunk the controller sends unasked (``delivery: push``), a few at a time: the agent's
    ``code_ack`` lets the next ones go."""

    TYPE = "push_code"
    REQUEST = False
    SENDER = "controller"


@message
@dataclass(frozen=True)
class CodeAck(Message):
    """An agent holds ``have`` bytes of a pushed bundle (the controller sends on from there);
    ``held``: it holds the whole verified bundle now and can send it to peers (False with
    ``have`` 0 after ``held``: it no longer does)."""

    TYPE = "code_ack"
    REQUEST = False
    SENDER = "agent"
    node: str = fld(max_len=128)
    digest: str = fld(pattern=DIGEST)
    have: int = fld(lo=0, hi=MAX_BUNDLE)
    held: bool | None = None


@message
@dataclass(frozen=True)
class SendCode(Message):
    """The controller asks an agent that holds bundle ``digest`` to send it to node ``to``,
    which listens at ``endpoint`` for a stream that starts with ``token`` (node_agent/diskmove.py)."""

    TYPE = "send_code"
    REQUEST = False
    SENDER = "controller"
    digest: str = fld(pattern=DIGEST)
    size: int = fld(lo=0, hi=MAX_BUNDLE)
    to: str = fld(max_len=128)
    endpoint: str = fld(pattern=ENDPOINT)
    token: str = fld(pattern=TOKEN)
