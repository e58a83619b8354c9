"""The ``vm`` isolation backend: slivers are QEMU microvm guests on this host.

A sliver is, from the node's ``MachineResources`` (shared with the container backend): a
cgroup leaf under the node's capacity-capped parent holding its QEMU and its console logger
(``machine.cg``, the container formula for the same cores); its ext4 disk (``machine.disks``,
the layout a container's disk has: ``upper/`` and ``work/`` of an overlay root) as a
virtio-blk drive; a TAP on the node bridge, shaped both ways (``machine.net.setup_tap``), with
an address from the node's one pool (``machine.addresses``), so a VM and a container of one
node never share an address and reach each other over the bridge. Of its own: an initrd made
of the node's base initramfs and the sliver's config (initramfs.py) and QEMU itself,
daemonized with a pidfile, a QMP socket and a guest agent socket (launcher.py).

Everything about a sliver lives in ``<state_dir>/slivers/<key>/`` (meta.json, disk.img,
initrd, events, console.log: sliverdirs.py, as a container's) and its sockets under
``/run/slicemesh/vm/``, so a new backend over the same state dir finds running VMs by their
pidfiles and talks to them over the same sockets: QEMU never depended on the agent process.

Resources: ``memory`` is the guest's RAM, and QEMU's cgroup may use that plus
``memory_overhead_mib`` (QEMU itself, the TCG translation cache, device buffers; see
docs/vm-slivers.md for how it was measured), which the node reports as the fact
``overhead.vm.memory`` so that placement charges it; ``cpu`` is ``-smp ceil(cpu)`` vCPUs and
the CPU quota and shares of ``cpu`` cores on the whole QEMU process; ``disk`` is the disk
file's size; ``bandwidth`` is a tbf each way on the TAP.
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from node_agent import codeimage
from node_agent.backends.base import BackendError, ExecUnsupported, undoing
from node_agent.backends.execio import ExecStdin, Terminal
from node_agent.backends.qemu import accel as accel_mod
from node_agent.backends.qemu import assets, execclient, initramfs, launcher, livemove, protocol, qmp, vmstate
from node_agent.backends.qemu.moving import LiveMoves
from node_agent.backends.qemu.settings import QemuSettings
from node_agent.cgroups import CgroupError
from node_agent.machine_resources import MachineResources, sliver_key
from node_agent.naming import hostname_for
from node_agent.processes import wait_gone
from node_agent.sliverdirs import SliverDirs
from slices import faults
from slices.migration import MigrationReport
from slices.model import SliverSpec, SliverStatus, Usage

DEFAULT_COMMAND = ("/bin/sh", "-c", "trap 'exit 0' TERM; while :; do sleep 3600 & wait $!; done")
MiB = 1 << 20
BOOT_ATTEMPTS = 2
FACT_MAX = 256  # NodeInfo.facts values are at most this long


class QemuBackend:
    """VM slivers through QEMU; see the module docstring for what one sliver is."""

    name = "qemu"
    kinds = frozenset({"vm"})
    #: How its slivers move between nodes (slices/migration.py).
    move_kind = "live"

    def __init__(self, machine: MachineResources, state_dir: Path, settings: QemuSettings | None = None, *, run_root: Path = launcher.RUN_ROOT) -> None:
        self.machine = machine
        self.settings = settings = settings or QemuSettings()
        self.state_dir = Path(state_dir).resolve()
        self.memory_overhead = settings.memory_overhead_mib * MiB
        self.stop_timeout, self.start_timeout, self.boot_timeout = settings.stop_timeout, settings.start_timeout, settings.boot_timeout
        self.run_root = run_root
        self.dirs = SliverDirs(self.state_dir / "slivers")
        self.slivers_dir = self.dirs.root
        self._metas = self.dirs.metas
        self.cg, self.net = machine.cg, machine.net
        try:
            self.assets = assets.ensure(machine.images_dir)
            self.accel = accel_mod.choose(assets.vm_dir(machine.images_dir), self.assets, settings.accelerator, deadline=settings.probe_deadline)
        except (assets.AssetError, ValueError, OSError) as exc:
            raise BackendError(f"qemu backend: {exc}") from None
        self._lock = threading.RLock()
        self._links = execclient.Links()
        self.moves = LiveMoves(self)
        self._etc_written: dict[str, dict[str, str]] = {}  # what each guest's /etc was last given
        for sid in self._metas:
            self._adopt(sid)

    # -- helpers ------------------------------------------------------------------------

    def _dir(self, sliver_id: str) -> Path:
        return self.dirs.dir(sliver_id)

    def _paths(self, sliver_id: str) -> launcher.RunPaths:
        return launcher.RunPaths.for_sliver(self._dir(sliver_id), self.run_root)

    def _join(self, key: str) -> launcher.Join:
        return lambda pid: self.cg.join(key, pid)

    def _leaf(self, spec: SliverSpec) -> None:
        """The sliver's cgroup leaf: the container formula for its cores, RAM + overhead."""
        self.cg.create_leaf(sliver_key(spec.id), self.machine.limits(spec.cpu, spec.memory + self.memory_overhead, self.settings.pids_limit))

    def _adopt(self, sliver_id: str) -> None:
        """A running VM (left by an earlier backend, or whose logger died): keep its console logged."""
        paths = self._paths(sliver_id)
        if launcher.qemu_pid(paths) is not None and launcher.logger_pid(paths) is None:
            key = sliver_key(sliver_id)
            with contextlib.suppress(CgroupError, OSError):  # its leaf holds QEMU: it exists
                launcher.start_logger(paths, self.dirs.log(sliver_id), self.settings.log_max_bytes, self._join(key))

    def pid(self, sliver_id: str) -> int | None:
        """QEMU's pid while the VM runs (re-adoption checks, debugging)."""
        return launcher.qemu_pid(self._paths(sliver_id)) if sliver_id in self._metas else None

    def address(self, sliver_id: str) -> str | None:
        """The guest's address on the node bridge."""
        return self.machine.addresses.get(sliver_id)

    def images(self) -> list[str]:
        return ["busybox"]

    def self_check(self) -> str | None:
        """Start-up self-check (build.py): the accelerator was probed in ``__init__``; the
        kernel and initramfs it boots from must still be there."""
        missing = [str(p) for p in (self.assets.kernel.image, self.assets.initramfs) if not Path(p).is_file()]
        return f"VM boot assets missing: {', '.join(missing)}" if missing else None

    def facts(self) -> dict[str, str]:
        """What ``slicemesh nodes`` shows about this node's VMs; ``overhead.vm.memory`` is what
        placement must charge per VM above its RAM."""
        return {
            "vm.accelerator": f"{self.accel.name} ({self.accel.reason})"[:FACT_MAX],
            "vm.kernel": self.assets.kernel.version[:FACT_MAX],
            "vm.min_memory": str(self.assets.min_memory),
            "overhead.vm.memory": str(self.memory_overhead),
            "move.vm": self.move_kind,
        }

    # -- lifecycle ----------------------------------------------------------------------

    def _refuse(self, spec: SliverSpec) -> None:
        if spec.isolation not in self.kinds:
            raise BackendError(f"qemu backend does not offer isolation {spec.isolation!r}")
        if spec.image not in self.images():
            raise BackendError(f"unknown image {spec.image!r} for VMs (this node offers {', '.join(self.images())})")
        if spec.memory < self.assets.min_memory:
            raise BackendError(
                f"a VM needs at least {self.assets.min_memory >> 20} MiB of memory to boot kernel {self.assets.kernel.version} (asked for {spec.memory >> 20} MiB)"
            )

    def create(self, spec: SliverSpec) -> SliverStatus:
        self._refuse(spec)
        with self._lock, self.machine.warmer.hold():
            if spec.id in self._metas:
                status = self.status(spec.id)
                return status if status.state in ("running", "pending", "failed") else self.start(spec.id)
            with undoing("create") as undo:
                sdir = self._dir(spec.id)
                sdir.mkdir()
                undo.append(lambda: self.dirs.remove(spec.id))
                self.machine.addresses.allocate(spec.id)
                undo.append(lambda: self.machine.addresses.release(spec.id))
                incoming = spec.migration if spec.migration is not None and spec.migration.role == "in" else None
                meta: dict[str, Any] = {"id": spec.id, "spec": spec.to_wire(), "desired": "running"}
                if incoming is not None:
                    meta["incoming"] = {"from": incoming.peer}
                    meta["spec"] = dataclasses.replace(spec, migration=None).to_wire()
                self.dirs.save(meta)
                self.machine.disks.create(sdir / "disk.img", spec.disk)
                faults.hit("agent.create.mid")  # on record with its address and disk; not booted
                return self._boot(meta, undo, incoming=None if incoming is None else incoming.token)

    def _boot(self, meta: dict[str, Any], undo: list[Callable[[], None]], attempt: int = 1, *, incoming: str | None = None) -> SliverStatus:
        """TAP, cgroup leaf, initrd, then QEMU inside the leaf; ``undo`` collects what to take
        back on failure. ``incoming``: the move's token; QEMU waits for a live migration (livemove.py) instead
        of booting; the guest's RAM, devices and disk come from the source."""
        spec = SliverSpec.from_wire(meta["spec"])
        sdir, key, paths = self._dir(spec.id), sliver_key(spec.id), self._paths(spec.id)
        address = self.machine.addresses.allocate(spec.id)
        undo.append(lambda: self.net.teardown_tap(key))
        try:
            meta["tap"] = self.net.setup_tap(key, address, spec.bandwidth or None)
        except Exception as exc:  # netlink, the tun device, a missing bridge: all say why
            raise BackendError(f"VM network: {exc}") from None
        undo.append(lambda: self.cg.remove_leaf(key))
        try:
            self._leaf(spec)
        except CgroupError as exc:
            raise BackendError(f"VM cgroup: {exc}") from None
        try:
            code = codeimage.ensure(self.machine.code_root, spec.code.digest) if spec.code is not None else None
        except (OSError, RuntimeError) as exc:
            raise BackendError(f"the slice's code: {exc}") from None
        cfg = initramfs.SliverConfig(
            hostname=hostname_for(spec.slice),
            address=f"{address}/{self.net.prefixlen}",
            gateway=self.net.gateway,
            argv=spec.command or DEFAULT_COMMAND,
            env=spec.env,
            stop_grace=max(1, int(self.stop_timeout / 2)),
            etc=self._etc(spec, address),
            code=code is not None,
        )
        try:
            initramfs.write_initrd(self.assets.initramfs, cfg, sdir / "initrd")
        except ValueError as exc:
            raise BackendError(str(exc)) from None
        vm = launcher.VmConfig(
            name=f"slicemesh-{key}",
            kernel=self.assets.kernel.image,
            initrd=sdir / "initrd",
            memory_mib=-(-spec.memory // MiB),
            cpus=max(1, math.ceil(spec.cpu)),
            disk=sdir / "disk.img",
            events=sdir / "events",
            mac=launcher.mac_for(key),
            tap=meta["tap"],
            accel=self.accel.name,
            tsc_khz=self.accel.tsc_khz,
            incoming=incoming is not None,
            code=code,
        )
        undo.append(lambda: launcher.remove_run_dir(paths))
        undo.append(lambda: self._kill(spec.id))
        try:
            launcher.launch(vm, paths, log=self.dirs.log(spec.id), log_max_bytes=self.settings.log_max_bytes, join=self._join(key), timeout=self.start_timeout)
        except launcher.LaunchError as exc:
            raise BackendError(str(exc)) from None
        except CgroupError as exc:
            raise BackendError(f"cannot put QEMU into the sliver's cgroup: {exc}") from None
        if incoming is not None:
            try:
                port, disk_port = livemove.listen(paths.qmp, incoming, paths.tls)
            except (livemove.MoveFailed, qmp.QmpError) as exc:
                raise BackendError(f"preparing the incoming migration: {exc}") from None
            meta["incoming"].update(port=port, disk_port=disk_port, since=time.time())
            self.dirs.save(meta)
            return self.moves.incoming_status(meta)
        meta.update(desired="running", started_at=time.time(), boot_attempts=attempt)
        meta.pop("oom_kills", None)
        meta.pop("boot_failure", None)
        self.dirs.save(meta)
        self.dirs.rate.forget(spec.id)
        return SliverStatus(spec.id, "pending", "booting")

    def _kill(self, sliver_id: str) -> None:
        """SIGKILL QEMU and its logger, wait for both (their cgroup can go only then)."""
        paths = self._paths(sliver_id)
        for pid in (launcher.qemu_pid(paths), launcher.logger_pid(paths)):
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                wait_gone(pid, 5.0)
        self._links.drop(sliver_id)

    def _release_runtime(self, sliver_id: str) -> None:
        """What a stopped VM no longer needs: its cgroup (after noting OOM kills) and sockets."""
        meta = self._metas.get(sliver_id)
        key = sliver_key(sliver_id)
        cg = self.cg.usage(key)
        if meta is not None and cg is not None and cg.oom_kills:
            meta["oom_kills"] = cg.oom_kills
            self.dirs.save(meta)
        self.cg.remove_leaf(key)
        launcher.remove_run_dir(self._paths(sliver_id))

    def start(self, sliver_id: str) -> SliverStatus:
        with self._lock, self.machine.warmer.hold():
            meta = self.dirs.require(sliver_id)
            if self.pid(sliver_id) is not None:
                if meta.pop("moved_out", None) is not None:  # its move failed after all: run on here
                    self.dirs.save(meta)
                    with contextlib.suppress(qmp.QmpError):
                        livemove.resume(self._paths(sliver_id).qmp)
                return self.status(sliver_id)
            self._kill(sliver_id)  # a logger left behind
            self._release_runtime(sliver_id)
            with undoing("start") as undo:  # QEMU, leaf, TAP; its disk and address stay
                return self._boot(meta, undo)

    def stop(self, sliver_id: str) -> SliverStatus:
        with self._lock:
            if not self.dirs.stopping(sliver_id):
                return SliverStatus(sliver_id, "lost", "no such sliver")
            paths = self._paths(sliver_id)
            pid = launcher.qemu_pid(paths)
            if pid is not None:
                launcher.shutdown(paths, pid, self.stop_timeout)
            self._kill(sliver_id)
            self._release_runtime(sliver_id)
            return SliverStatus(sliver_id, "stopped")

    def destroy(self, sliver_id: str) -> None:
        with self._lock:
            self._etc_written.pop(sliver_id, None)
            key = sliver_key(sliver_id)
            self._kill(sliver_id)
            self.cg.remove_leaf(key)
            faults.hit("agent.destroy.mid")  # QEMU and its cgroup gone; run dir, TAP, disk and record left
            launcher.remove_run_dir(self._paths(sliver_id))
            self.net.teardown_tap(key)
            self.dirs.remove(sliver_id)
            self.machine.addresses.release(sliver_id)

    # -- observation ----------------------------------------------------------------------

    def _events(self, sliver_id: str) -> vmstate.GuestEvents:
        try:
            return vmstate.parse_events((self._dir(sliver_id) / "events").read_text(errors="replace"))
        except OSError:
            return vmstate.GuestEvents()

    def status(self, sliver_id: str) -> SliverStatus:
        with self._lock:
            meta = self._metas.get(sliver_id)
            if meta is None:
                return SliverStatus(sliver_id, "lost", "no such sliver")
            if "incoming" in meta:
                return self.moves.incoming_status(meta)
            alive = launcher.qemu_pid(self._paths(sliver_id)) is not None
            if alive and "moved_out" in meta:
                why = f"moved to {meta['moved_out']} by live migration; paused here until it is removed"
                return SliverStatus(sliver_id, "stopped", why, migration=MigrationReport(phase="sent", kind="live"))
            events = self._events(sliver_id)
            if meta.get("migrated_in"):  # its command started on the node it came from
                events = dataclasses.replace(events, running=True)
            if alive and self._boot_overdue(meta, events):
                return self._reboot_or_fail(meta)
            if alive:
                self._adopt(sliver_id)  # a console logger that died is replaced
                if meta.get("readdress"):
                    self.moves.settle(meta)
            cg = None if alive else self.cg.usage(sliver_key(sliver_id))
            oom = cg.oom_kills if cg is not None else int(meta.get("oom_kills", 0))
            state, reason = vmstate.vm_state(alive, meta["desired"], oom, events)
            if not alive and meta.get("boot_failure") and meta["desired"] == "running":
                state, reason = "failed", str(meta["boot_failure"])
            return SliverStatus(sliver_id, state, reason, self.usage(sliver_id) if state == "running" else None)

    def send(self, spec: SliverSpec) -> MigrationReport:
        """Live-migrate the VM to ``spec.migration``'s target (moving.py); blocks."""
        return self.moves.send(spec)

    def _boot_overdue(self, meta: dict[str, Any], events: vmstate.GuestEvents) -> bool:
        """A guest that has not started its command long after QEMU did: a hung boot (a TCG
        guest on a busy host can hang in early boot for reasons of its own)."""
        booting = meta["desired"] == "running" and not events.running and events.exit is None and events.error is None
        return booting and time.time() - float(meta.get("started_at", time.time())) > self.boot_timeout

    def _reboot_or_fail(self, meta: dict[str, Any]) -> SliverStatus:
        """Kill the hung guest; boot it once more, or give up with the reason."""
        sid, attempt = meta["id"], int(meta.get("boot_attempts", 1))
        self._kill(sid)
        self._release_runtime(sid)
        if attempt < BOOT_ATTEMPTS:
            try:
                return self._boot(meta, [], attempt + 1)
            except BackendError as exc:
                meta["boot_failure"] = f"rebooting a hung guest failed: {exc.reason}"
        else:
            meta["boot_failure"] = f"the guest did not start its command within {self.boot_timeout:g} s ({attempt} boots)"
        self.dirs.save(meta)
        return SliverStatus(sid, "failed", str(meta["boot_failure"]))

    def list(self) -> builtins.list[SliverStatus]:
        return [self.status(sid) for sid in builtins.list(self._metas)]

    def usage(self, sliver_id: str) -> Usage:
        """QEMU's CPU and memory as its cgroup counts them (the guest's RAM as QEMU has touched
        it, plus QEMU's own), and the TAP's traffic as the guest sees it."""
        key = sliver_key(sliver_id)
        return self.dirs.usage(sliver_id, self.cg.usage(key) if sliver_id in self._metas else None, self.net.counters(key))

    def _link(self, sliver_id: str) -> execclient.Link:
        with self._lock:
            self.dirs.require(sliver_id)
            if self.pid(sliver_id) is None:
                raise BackendError(f"sliver {sliver_id!r} is not running")
            return self._links.get(sliver_id, self._paths(sliver_id).agent)

    def guest_memory(self, sliver_id: str, timeout: float = 5.0) -> dict[str, int]:
        """The guest's own view of its memory (MemTotal, MemAvailable, ... in bytes)."""
        try:
            return execclient.guest_meminfo(self._link(sliver_id), timeout)
        except execclient.AgentError as exc:
            raise BackendError(str(exc)) from None

    def exec(self, sliver_id: str, argv: builtins.list[str], timeout: float, stdin: ExecStdin | None = None, tty: Terminal | None = None) -> Iterator[tuple[str, bytes]]:
        if tty is not None:  # the guest agent runs commands on pipes only (docs/vm-slivers.md)
            raise ExecUnsupported("a terminal (exec -t) is not available in VM slivers yet: use exec -i without -t")
        link = self._link(sliver_id)
        try:
            protocol.exec_payload(argv)
        except protocol.ProtocolError as exc:
            raise BackendError(str(exc)) from None
        return self._exec(link, argv, timeout, stdin)

    @staticmethod
    def _exec(link: execclient.Link, argv: builtins.list[str], timeout: float, stdin: ExecStdin | None) -> Iterator[tuple[str, bytes]]:
        try:
            yield from execclient.run(link, argv, timeout, stdin=stdin)
        except execclient.AgentError as exc:
            raise BackendError(str(exc)) from None

    def logs(self, sliver_id: str, offset: int | None, limit: int) -> tuple[bytes, int]:
        return self.dirs.logs(sliver_id, offset, limit)

    def flush(self) -> None:
        """Nothing to batch: each sliver's record is written as it changes."""

    def _etc(self, spec: SliverSpec, address: str) -> dict[str, str]:
        """The guest's /etc/hosts and resolv.conf, as a container's (slicenet.py)."""
        return {name.removeprefix("etc/"): text for name, text in self.machine.slicenet.etc_files(spec.id, spec.slice, address).items()}

    def network_changed(self) -> None:
        """Guests are isolated by the node's firewall like containers (their TAPs sit on the
        bridge); each running guest gets its new /etc/hosts and resolv.conf through its agent
        (written aside, then renamed, as a container's)."""
        with self._lock:
            running = [(sid, meta) for sid, meta in self._metas.items() if "incoming" not in meta and "moved_out" not in meta and self.pid(sid) is not None]
        for sid, meta in running:
            address = self.machine.addresses.get(sid)
            if address is None:
                continue
            files = self._etc(SliverSpec.from_wire(meta["spec"]), address)
            if self._etc_written.get(sid) != files and self.moves.write_etc(sid, files):
                self._etc_written[sid] = files  # another slice's change leaves this guest alone

    def close(self) -> None:
        """Drop connections; VMs keep running. The node's resources are the machine's to release."""
        self._links.close()
