"""A slice's code: uploaded by its owner to the controller's content store, fetched by the
nodes that run its slivers (docs/code.md)."""

from __future__ import annotations

from dataclasses import dataclass

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
    digest: str = fld(pattern=DIGEST)
    offset: int = fld(lo=0, hi=MAX_BUNDLE)
    size: int = fld(lo=0, hi=MAX_BUNDLE)
    data: bytes = fld(b"", max_len=CHUNK)


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
    """An agent holds ``have`` bytes of a pushed bundle (the controller sends on from there)."""

    TYPE = "code_ack"
    REQUEST = False
    SENDER = "agent"
    node: str = fld(max_len=128)
    digest: str = fld(pattern=DIGEST)
    have: int = fld(lo=0, hi=MAX_BUNDLE)
