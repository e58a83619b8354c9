"""A VM backend's side of live migration (livemove.py has the QMP steps; slices/migration.py
the records): the target's waiting VM, its new address, and the source's send."""

from __future__ import annotations

import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from node_agent.backends.base import BackendError, collected
from node_agent.backends.qemu import execclient, launcher, livemove, qmp
from slices.migration import MigrationReport
from slices.model import SliverSpec, SliverStatus

if TYPE_CHECKING:
    from node_agent.backends.qemu.backend import QemuBackend

log = logging.getLogger(__name__)


class LiveMoves:
    def __init__(self, backend: QemuBackend) -> None:
        self.backend = backend

    def incoming_status(self, meta: dict[str, Any]) -> SliverStatus:
        """A VM waiting for its migration: ``pending`` with the port, then, once QEMU resumed
        it, ``running`` on this node's address (the guest is told it through its agent)."""
        b, sid, inc = self.backend, meta["id"], meta["incoming"]
        paths = b._paths(sid)
        if launcher.qemu_pid(paths) is None:
            why = f"the live migration from {inc['from']} failed: the incoming QEMU exited (see the console log)"
            return SliverStatus(sid, "failed", why, migration=MigrationReport(phase="failed", kind="live", reason=why))
        try:
            state = livemove.run_state(paths.qmp)
        except qmp.QmpError:
            state = "unknown"
        if state != "running":
            if time.time() - float(inc.get("since", time.time())) > b.settings.incoming_timeout:
                b._kill(sid)
                why = f"no migration from {inc['from']} arrived within {b.settings.incoming_timeout:g} s"
                return SliverStatus(sid, "failed", why, migration=MigrationReport(phase="failed", kind="live", reason=why))
            listening = MigrationReport(phase="listening", kind="live", port=int(inc.get("port", 0)), disk_port=int(inc.get("disk_port", 0)))
            return SliverStatus(sid, "pending", f"waiting for the VM from {inc['from']}", migration=listening)
        with contextlib.suppress(qmp.QmpError):  # its disk is its own now
            livemove.arrived(paths.qmp, paths.tls)
        del meta["incoming"]
        meta.update(migrated_in=time.time(), started_at=time.time(), boot_attempts=1, readdress=True)
        b.dirs.save(meta)
        kept = self.settle(meta)
        return SliverStatus(sid, "running", None, b.usage(sid), migration=MigrationReport(phase="received", kind="live", address_changed=kept is None, reason=kept))

    def settle(self, meta: dict[str, Any]) -> str | None:
        """A guest that arrived takes this node's address and /etc files; until its agent
        answers (a TCG guest re-translates everything after a move, slowly on a busy host),
        each status check tries again. None once done, or why not yet."""
        b, sid = self.backend, meta["id"]
        kept = self.readdress(sid)
        if kept is not None:
            return kept
        address = b.machine.addresses.get(sid)
        if address is not None:  # its own name now resolves to its new address
            self.write_etc(sid, b._etc(SliverSpec.from_wire(meta["spec"]), address))
        meta.pop("readdress", None)
        b.dirs.save(meta)
        return None

    def _shell(self, sliver_id: str, argv: list[str], timeout: float, stdin: bytes | None = None) -> str | None:
        """Run ``sh -c ARGV...`` in the guest through its agent; None, or why it failed."""
        b = self.backend
        try:
            code, _, err = collected(execclient.run(b._links.get(sliver_id, b._paths(sliver_id).agent), ["/bin/sh", "-c", *argv], timeout, stdin=stdin))
        except execclient.AgentError as exc:
            return str(exc)
        return None if code == 0 else err.decode(errors="replace").strip()[:200]

    def readdress(self, sliver_id: str) -> str | None:
        """Give the resumed guest this node's address for it (it kept the old node's in its
        memory); None, or why it could not."""
        b = self.backend
        address = b.machine.addresses.get(sliver_id)
        why = self._shell(sliver_id, [f"ip addr flush dev eth0 && ip addr add {address}/{b.net.prefixlen} dev eth0 && ip route replace default via {b.net.gateway}"], 5.0)
        return None if why is None else f"the guest kept its old address: {why}"

    def write_etc(self, sliver_id: str, files: dict[str, str]) -> bool:
        """Replace files of the guest's /etc (by rename) through its agent; whether all were."""
        script = 'cat > "/etc/.$1.slicemesh" && mv "/etc/.$1.slicemesh" "/etc/$1"'
        for name, text in sorted(files.items()):
            why = self._shell(sliver_id, [script, "sh", name], 20.0, stdin=text.encode())
            if why is not None:
                log.warning("%s: /etc/%s not written: %s", sliver_id, name, why)
                return False
        return True

    def send(self, spec: SliverSpec) -> MigrationReport:
        """Live-migrate a running VM to ``spec.migration.endpoint`` (blocks for the whole
        migration; the agent runs it off its loop and worker). Afterwards the VM is paused here
        until it is destroyed, or resumed by ``start`` if the move fails after all."""
        b, move = self.backend, spec.migration
        assert move is not None and move.endpoint is not None
        if move.disk_endpoint is None:
            raise BackendError("the target did not say where it serves the VM's disk")
        paths = b._paths(spec.id)
        if launcher.qemu_pid(paths) is None:
            raise BackendError("the VM is not running here")
        try:
            rep = livemove.send(paths.qmp, move.endpoint, move.disk_endpoint, move.options, move.token, paths.tls)
        except livemove.MoveFailed as exc:
            raise BackendError(str(exc)) from None
        with b._lock:
            meta = b.dirs.require(spec.id)
            meta["moved_out"] = move.peer
            b.dirs.save(meta)
        return rep
