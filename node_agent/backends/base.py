"""The backend interface every isolation backend implements (sim, runc containers, QEMU VMs).

The agent's reconciler calls these; a backend owns everything it creates for a sliver and
must be able to find it again after the agent restarts (``list``), so slivers outlive the
agent. Every method is idempotent. ``create`` rolls back whatever it made when it fails.
"""

from __future__ import annotations

import builtins
import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Protocol, runtime_checkable

from node_agent.backends.execio import ExecStdin, Terminal
from slices.model import SliverSpec, SliverStatus, Usage


class BackendError(Exception):
    """A sliver operation failed; ``reason`` is short and stable enough to show users."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ExecUnsupported(BackendError):
    pass


class ExecFailed(BackendError):
    """The command never ran (no such program); ``exit_code`` is what a shell returns for it."""

    def __init__(self, reason: str, exit_code: int) -> None:
        super().__init__(reason)
        self.exit_code = exit_code


def collected(chunks: Iterator[tuple[str, bytes]]) -> tuple[int, bytes, bytes]:
    """An ``exec`` stream run to its end: (exit code, stdout, stderr)."""
    out, err, code = b"", b"", -1
    for stream, chunk in chunks:
        if stream == "stdout":
            out += chunk
        elif stream == "stderr":
            err += chunk
        else:
            code = int(chunk)
    return code, out, err


def exit_state(rec: Mapping[str, int]) -> tuple[str, str]:
    """(state, reason) of a sliver whose command ended, a container's or a VM's alike (the
    restart policy reads the state): a clean exit is ``exited`` (restarted only under
    ``restart: always``), a kill or a non-zero code ``failed``."""
    if "signal" in rec:
        return "failed", f"killed by signal {rec['signal']}"
    if rec.get("code") == 0:
        return "exited", "exited with code 0"  # it finished: not a failure
    return "failed", f"exited with code {rec.get('code')}"


@contextlib.contextmanager
def undoing(what: str) -> Iterator[list[Callable[[], None]]]:
    """Collect the steps that take back what a create or start made; when the block raises,
    run them newest first (each may fail on its own) and raise a ``BackendError`` saying
    ``<what> failed: ...`` (a BackendError passes as it is)."""
    undo: list[Callable[[], None]] = []
    try:
        yield undo
    except Exception as exc:
        for step in reversed(undo):
            with contextlib.suppress(Exception):
                step()
        if isinstance(exc, BackendError):
            raise
        raise BackendError(f"{what} failed: {exc}") from exc


@runtime_checkable
class Backend(Protocol):
    #: "sim", "runc", "qemu": shown to users next to each isolation kind.
    name: str
    #: Isolation kinds this backend serves: {"container"}, {"vm"} or both.
    kinds: frozenset[str]

    def images(self) -> list[str]:
        """Images this backend can start slivers from."""

    def facts(self) -> dict[str, str]:
        """What it found at start that users and placement should know (``NodeInfo.facts``,
        shown by ``slicemesh nodes``): e.g. ``vm.accelerator``, and ``overhead.<kind>.<resource>``
        for what each sliver of a kind costs the node beyond what it asked for."""

    def self_check(self) -> str | None:
        """At agent start: why this host cannot run this backend's slivers (a probe of what
        they need), or None. A backend that fails is not offered (build.py)."""

    def create(self, spec: SliverSpec) -> SliverStatus:
        """Make the sliver exist and start it; return its status. Idempotent by ``spec.id``."""

    def start(self, sliver_id: str) -> SliverStatus:
        """Start a stopped sliver."""

    def stop(self, sliver_id: str) -> SliverStatus:
        """Stop the sliver's processes but keep its disk and identity."""

    def destroy(self, sliver_id: str) -> None:
        """Remove everything the sliver owns; a no-op for an unknown id."""

    def status(self, sliver_id: str) -> SliverStatus:
        """Current state; ``lost`` for an id this backend does not have."""

    def usage(self, sliver_id: str) -> Usage:
        """Resource use from the backend's own accounting."""

    def exec(self, sliver_id: str, argv: list[str], timeout: float, stdin: ExecStdin | None = None, tty: Terminal | None = None) -> Iterator[tuple[str, bytes]]:
        """Run a command inside the sliver: yields ("stdout"|"stderr", chunk) and finally
        ("exit", b"<code>"). ``stdin``: the user's input as it comes (None: no input);
        ``tty``: run it under a pseudo-terminal of that size (resized through ``stdin``).
        A backend that cannot do one raises ``ExecUnsupported`` saying so."""

    def logs(self, sliver_id: str, offset: int | None, limit: int) -> tuple[bytes, int]:
        """The sliver's output from byte ``offset`` (``None``: the last ``limit`` bytes), at
        most ``limit`` bytes, and the offset to continue from (``slicemesh logs --follow``)."""

    def flush(self) -> None:
        """Persist what changed since the last call; the agent calls it after each reconcile."""

    def network_changed(self) -> None:
        """Who shares a slice with whom changed (``MachineResources.slicenet``): refresh what
        the slivers know of it (a container's /etc/hosts); a no-op where there is nothing."""

    def close(self) -> None:
        """Release the backend's own resources; slivers keep running."""

    # Last, so that ``list`` in the annotations above still means the builtin.
    def list(self) -> builtins.list[SliverStatus]:
        """Every sliver this backend holds on this node, for re-adoption after a restart."""
