"""Moving a slice's running slivers to other nodes (``slicemesh migrate``; slices/migration.py)."""

from __future__ import annotations

from dataclasses import dataclass

from slices.migration import MOVE_KINDS, MoveOptions
from slices.model import NODE_NAME, SLIVER_ID
from slices.protocol.base import Message, message
from slices.wire import fld


@dataclass(frozen=True)
class MoveView:
    """One move begun: which sliver, from where, to where, and how (``live`` or ``cold``)."""

    sliver: str = fld(pattern=SLIVER_ID)
    source: str = fld(pattern=NODE_NAME)
    target: str = fld(pattern=NODE_NAME)
    kind: str = fld(pattern="|".join(MOVE_KINDS))


@dataclass(frozen=True)
class MovesBegun:
    slice: str = fld(max_len=256)
    moves: list[MoveView] = fld(factory=list, max_items=100_000)


@message
@dataclass(frozen=True)
class MigrateSlice(Message):
    """Move one sliver (``sliver``) or all of a slice's to node ``to``, or (``to`` null) where
    placement finds room under the slice's own constraints; each keeps running where it is
    until its state has arrived (make-before-break)."""

    TYPE = "migrate_slice"
    REPLY = MovesBegun
    slice: str = fld(max_len=256)
    sliver: str | None = fld(None, pattern=SLIVER_ID)
    to: str | None = fld(None, pattern=NODE_NAME)
    options: MoveOptions = fld(factory=MoveOptions)
