"""Errors that cross layers, each with a stable code that travels on the wire."""

from __future__ import annotations


class SliceMeshError(Exception):
    """A domain error: becomes an ``error`` reply with ``code`` and a human ``reason``."""

    code = "error"

    def __init__(self, reason: str, *, code: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        if code is not None:
            self.code = code


class SpecError(SliceMeshError):
    """A slice spec (or other user input) failed validation; ``path`` names the field."""

    code = "invalid-spec"

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}" if path else reason)
        self.path = path


class NotFound(SliceMeshError):
    code = "not-found"


class AlreadyExists(SliceMeshError):
    code = "exists"


class Infeasible(SliceMeshError):
    code = "infeasible"


class BadRequest(SliceMeshError):
    code = "bad-request"


class ProtocolError(SliceMeshError):
    """A frame that cannot be decoded into a valid envelope (logged and dropped)."""

    code = "protocol"
