"""Errors that cross layers, each with a stable code that travels on the wire."""

from __future__ import annotations

from typing import Any


class SliceMeshError(Exception):
    """A domain error: becomes an ``error`` reply with ``code``, a human ``reason`` and, when
    a program can use more than the line, structured ``details`` (an infeasible slice's
    suggested changes)."""

    code = "error"
    #: Also answered when a notice raised it (which otherwise gets no reply, only a log line).
    answers_notices = False

    def __init__(self, reason: str, *, code: str | None = None, details: dict[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.details = details
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


class Busy(SliceMeshError):
    """A change not applied for now (nothing was written): a retry may succeed."""

    code = "busy"


class BadRequest(SliceMeshError):
    code = "bad-request"


class ProtocolError(SliceMeshError):
    """A frame that cannot be decoded into a valid envelope (logged and dropped)."""

    code = "protocol"


#: Every error code on the wire, with what it means (docs/protocol.md lists each; a test checks).
ERROR_CODES: dict[str, str] = {
    "invalid-spec": "the slice spec failed validation; the reason names the field",
    "infeasible": "placement cannot satisfy the request; the reason says which constraint removed how many nodes",
    "exists": "a slice of that name exists",
    "not-found": "no such slice, sliver or node",
    "ambiguous": "the slice has several slivers and the request named none (`--node` or `--sliver`); details list them",
    "bad-request": "the request's body does not fit its type, or its values are out of range",
    "unknown-node": "a heartbeat from a node the controller does not know: register again",
    "report-lost": "a report from the node never arrived (a gap in their numbers): send every sliver's status again",
    "version-mismatch": "the peer speaks another protocol major version",
    "protocol": "a reply did not fit the type the request expects",
    "internal": "the handler failed; the controller logged it and keeps serving",
    "timeout": "a relayed request was not answered in time",
    "node-down": "the sliver's node is not reachable",
    "exec-failed": "the backend could not run the command in the sliver",
    "too-large": "the reply would be larger than the controller's max_reply_bytes: ask for less (a page, with a limit)",
    "unsupported": "the sliver's backend cannot do this (e.g. exec in a simulated sliver)",
    "unknown-key": "the connection's key is not accepted by the controller (only `register` may enrol a new agent key)",
    "pending": "a new agent key waits for an operator to accept it (`slicemesh keys accept NODE`)",
    "forbidden": "the caller's role or key may not do this; the reason names the rule",
    "conflict": "a node name or key is already bound to another key or live connection",
    "quota": "a site limit would be exceeded; the reason names the rule and the numbers",
    "cannot-move": "a migrate was refused: the sliver is not running or already moving, a node cannot take the move, or no node fits the slice's constraints",
    "unavailable": "the controller cannot write its database (e.g. a full disk): changes are refused, reads still work",
    "busy": "the change was not applied: too many changes wait behind a large slice being placed, or the nodes it was planned on changed meanwhile; try again",
    "no-identity": "the CLI has no identity (key pair and controller key) for that controller",
    "usage": "the command line does not fit the command (the CLI's own check; nothing was sent)",
    "error": "a refusal without a more specific code",
}
