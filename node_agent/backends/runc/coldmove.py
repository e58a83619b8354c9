"""Cold moves of container slivers: stop here, send the disk, start there (slices/migration.py).

Strong mobility for a container needs CRIU (``runc checkpoint``/``restore``), which this
kernel cannot run (``criu check``: see docs/migration.md); so a container moves **cold**: its
files survive (its whole writable layer is its ext4 disk image), its memory and processes do
not, and its command starts again on the new node.

Target (``prepare``): the sliver's directory and record with ``incoming``, and a
``diskmove.Receiver`` on a port of its own, in a thread; until the verified image is there,
its status is ``pending`` with that port. Once it is, ``status`` finishes: the files of the
layer are given the target's user-namespace ids (they belong to the source's range), then the
sliver boots as any other whose disk already exists. Source (``send``): stop the container,
unmount its disk, send it, and record that it moved; when the send fails it starts again
here, so a failed move leaves it running where it was.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from node_agent import diskmove, userns, vdisk
from node_agent.backends.base import BackendError, undoing
from node_agent.backends.runc import rootfs
from node_agent.backends.runc.slots import slot_parts
from node_agent.machine_resources import sliver_key
from slices import faults
from slices.migration import Migration, MigrationReport
from slices.model import SliverSpec, SliverStatus

if TYPE_CHECKING:
    from node_agent.backends.runc.backend import RuncBackend

log = logging.getLogger(__name__)

UNMOUNT_WAIT = 20.0  # seconds a stopped sliver's disk may stay busy before a cold move gives up


def criu_problem() -> str | None:
    """Why a container cannot be checkpointed and restored here (``criu check``), or None."""
    if shutil.which("criu") is None:
        return "no: criu is not installed"
    try:
        proc = subprocess.run(["criu", "check"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"no: criu check: {exc}"
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
        return f"no: criu check: {lines[-1] if lines else f'exit status {proc.returncode}'}"[:200]
    return None


def shift_ids(root: Path, src: int | None, dst: int | None, span: int = userns.SLIVER_IDS) -> int:
    """Give every file under ``root`` owned by an id in ``[src, src + span)`` the same offset
    in ``[dst, dst + span)`` (None: the ids container root sees, from 0); how many changed."""
    src, dst = src or 0, dst or 0
    if src == dst:
        return 0
    changed = 0

    def moved(i: int) -> int:
        return i - src + dst if src <= i < src + span else i

    for top, dirs, files in os.walk(root):
        for name in [*dirs, *files, ""]:
            path = os.path.join(top, name) if name else top
            if name == "" and top != str(root):
                continue  # each directory is shifted once, as an entry of its parent
            st = os.lstat(path)
            uid, gid = moved(st.st_uid), moved(st.st_gid)
            if (uid, gid) != (st.st_uid, st.st_gid):
                mode = st.st_mode
                os.lchown(path, uid, gid)
                if not os.path.islink(path):
                    os.chmod(path, mode & 0o7777)  # chown clears setuid/setgid bits
                changed += 1
    return changed


@dataclasses.dataclass
class _Incoming:
    receiver: diskmove.Receiver
    thread: threading.Thread
    meta: dict[str, Any] | None = None
    error: str | None = None


class ColdMoves:
    """A runc backend's side of cold moves, both directions."""

    def __init__(self, backend: RuncBackend, wait: float) -> None:
        self.backend = backend
        self.wait = wait  # seconds a target waits for the disk before it gives up
        self._incoming: dict[str, _Incoming] = {}

    def prepare(self, spec: SliverSpec) -> SliverStatus:
        move = spec.migration
        assert move is not None
        b = self.backend
        if spec.id in b._metas:
            return b.status(spec.id)
        with undoing("preparing the move") as undo:
            sdir = b._dir(spec.id)
            sdir.mkdir()
            undo.append(lambda: b._remove_files(spec.id))
            meta: dict[str, Any] = {"id": spec.id, "spec": dataclasses.replace(spec, migration=None).to_wire(), "desired": "running"}
            meta["incoming"] = {"from": move.peer, "since": time.time()}
            rx = diskmove.Receiver(move.token)
            undo.append(rx.close)
            meta["incoming"]["port"] = rx.port
            b._save(meta)
            undo.append(lambda: b._forget(spec.id))
            job = _Incoming(rx, threading.Thread(target=self._receive, args=(spec.id, slot_parts(sdir)[0]), name=f"receive-{spec.id}", daemon=True))
            self._incoming[spec.id] = job
            job.thread.start()
        return self._waiting(meta)

    def drop(self, sliver_id: str) -> None:
        """The sliver is destroyed: stop waiting for its disk."""
        job = self._incoming.pop(sliver_id, None)
        if job is not None:
            job.receiver.close()
            job.thread.join(5.0)

    def _receive(self, sliver_id: str, image: Path) -> None:
        job = self._incoming[sliver_id]
        try:
            job.meta = job.receiver.receive(image, time.monotonic() + self.wait)
        except diskmove.TransferError as exc:
            job.error = str(exc)
        finally:
            job.receiver.close()

    @staticmethod
    def _waiting(meta: dict[str, Any]) -> SliverStatus:
        inc = meta["incoming"]
        return SliverStatus(meta["id"], "pending", f"waiting for its disk from {inc['from']}", migration=MigrationReport(phase="listening", kind="cold", port=int(inc["port"])))

    def status(self, meta: dict[str, Any]) -> SliverStatus:
        """Of a sliver with a move under way here: ``incoming`` or ``moved_out`` in its record."""
        sid = meta["id"]
        if "moved_out" in meta:
            return SliverStatus(sid, "stopped", f"moved to {meta['moved_out']} (cold move)", migration=MigrationReport(phase="sent", kind="cold"))
        job = self._incoming.get(sid)
        if job is None:
            return self._failed(sid, "the agent restarted while the disk was arriving")
        if job.thread.is_alive():
            return self._waiting(meta)
        self._incoming.pop(sid)
        if job.error is not None or job.meta is None:
            return self._failed(sid, f"the move from {meta['incoming']['from']} failed: {job.error}")
        try:
            return self._finish(meta, job.meta)
        except BackendError as exc:
            return self._failed(sid, f"the moved sliver did not start: {exc.reason}")

    def _failed(self, sliver_id: str, why: str) -> SliverStatus:
        """Nothing of a failed incoming sliver stays (the controller takes the move back)."""
        self.backend.destroy(sliver_id)
        return SliverStatus(sliver_id, "failed", why, migration=MigrationReport(phase="failed", kind="cold", reason=why))

    def _finish(self, meta: dict[str, Any], sent: dict[str, Any]) -> SliverStatus:
        b, sid = self.backend, meta["id"]
        faults.hit("agent.move.target_received")
        with undoing("starting the moved sliver") as undo:
            host_id = b.machine.host_id(b.machine.addresses.allocate(sid))
            undo.append(lambda: b.machine.addresses.release(sid))
            if host_id is not None:
                meta.update(host_id=host_id, rootfs=rootfs.new_root(b._root_stem(sliver_key(sid))))
            image, disk, _ = slot_parts(b._dir(sid))
            b.disks.mount_disk(image, disk)
            undo.append(lambda: b.disks.remove(*b._disk_parts(sid, meta)))
            src = sent.get("host_id")
            shift_ids(disk / "upper", src if isinstance(src, int) else None, host_id)
            del meta["incoming"]
            status = b._boot(meta, undo)
        return dataclasses.replace(status, migration=MigrationReport(phase="received", kind="cold", address_changed=True))

    def send(self, spec: SliverSpec) -> MigrationReport:
        """Stop the container, send its disk to ``spec.migration.endpoint``; its report. On
        failure it starts here again and BackendError says why the move failed."""
        move: Migration | None = spec.migration
        assert move is not None and move.endpoint is not None
        b, sid = self.backend, spec.id
        started = time.monotonic()
        with b._lock:
            meta = b.dirs.require(sid)
            b.stop(sid)
            _, disk, root = b._disk_parts(sid, meta)
            os.sync()
            if not (vdisk.umount_strict(root, UNMOUNT_WAIT) and vdisk.umount_strict(disk, UNMOUNT_WAIT)):
                b.start(sid)  # it runs on here: its disk is still in use, a copy of it would be stale
                raise BackendError(f"the cold move to {move.peer} was not started: the sliver's disk stayed busy for {UNMOUNT_WAIT:g} s after it stopped")
            image = slot_parts(b._dir(sid))[0]
            stopped = time.monotonic()
            faults.hit("agent.move.source_stopped")
        try:
            sent = diskmove.send_file(move.endpoint, move.token, image, {"host_id": meta.get("host_id")}, timeout=move.options.timeout)
        except diskmove.TransferError as exc:
            log.warning("%s: cold move to %s failed, starting it here again: %s", sid, move.peer, exc)
            b.start(sid)
            raise BackendError(f"the cold move to {move.peer} failed: {exc}") from None
        with b._lock:
            meta["moved_out"] = move.peer
            b._save(meta)
        done = time.monotonic()
        return MigrationReport(phase="sent", kind="cold", total_ms=(done - started) * 1000, downtime_ms=(done - stopped) * 1000, bytes=sent.bytes, disk_bytes=sent.data)
