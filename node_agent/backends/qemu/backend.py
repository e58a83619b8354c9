"""The ``vm`` isolation backend: slivers are QEMU microvm guests on this host.

A sliver is: a cgroup leaf under the node's capacity-capped parent holding its QEMU and its
console logger (hostres.py); its ext4 disk (vdisk.py, the same layout a container's disk has:
``upper/`` and ``work/`` of an overlay root) as a virtio-blk drive; a TAP on the node bridge
with an address from the node subnet (hostres.py); an initrd made of the node's base
initramfs and the sliver's own config (initramfs.py); QEMU itself, daemonized with a pidfile,
a QMP socket and a guest agent socket (launcher.py). Everything about a sliver lives in
``<state_dir>/slivers/<key>/`` (meta.json, disk.img, initrd, events, console.log) and its
sockets under ``/run/slicemesh/vm/``, so a new backend over the same state dir finds running
VMs by their pidfiles and talks to them over the same sockets: QEMU never depended on the
agent process.

Resources: ``memory`` is the guest's RAM, and QEMU's cgroup may use that plus
``memory_overhead`` (QEMU itself, the TCG translation cache, device buffers; see
docs/vm-slivers.md for how it was measured); ``cpu`` is ``-smp ceil(cpu)`` vCPUs and a CPU
quota of ``cpu`` cores on the whole QEMU process; ``disk`` is the disk file's size;
``bandwidth`` is a tbf on the TAP.
"""

from __future__ import annotations

import builtins
import contextlib
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from node_agent import cgroups, images, sliverio
from node_agent.backends.base import BackendError
from node_agent.backends.qemu import accel as accel_mod
from node_agent.backends.qemu import assets, execclient, hostres, initramfs, launcher, protocol, vmstate
from node_agent.netdev import Network, allocate
from node_agent.oci import hostname_for, sliver_key
from node_agent.sliverdirs import CpuRate, SliverDirs
from node_agent.vdisk import VDisks
from slices.model import SliverSpec, SliverStatus, Usage

DEFAULT_COMMAND = ("/bin/sh", "-c", "trap 'exit 0' TERM; while :; do sleep 3600 & wait $!; done")
MiB = 1 << 20
DEFAULT_OVERHEAD = 96 * MiB
BOOT_ATTEMPTS = 2


class QemuBackend:
    """VM slivers through QEMU; see the module docstring for what one sliver is."""

    name = "qemu"
    kinds = frozenset({"vm"})

    def __init__(
        self,
        state_dir: Path,
        node: str,
        *,
        capacity_cpu: float | None = None,
        capacity_memory: int | None = None,
        prefix: str = "slicemesh",
        subnet: str | None = None,
        images_dir: Path = images.DEFAULT_DIR,
        log_max_bytes: int = 1 << 20,
        accel: str = "auto",
        memory_overhead: int = DEFAULT_OVERHEAD,
        stop_timeout: float = 10.0,
        start_timeout: float = 30.0,
        boot_timeout: float = 90.0,
        probe_deadline: float = 8.0,
        run_root: Path = launcher.RUN_ROOT,
    ) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.node, self.prefix = node, prefix
        self.log_max_bytes, self.memory_overhead = log_max_bytes, memory_overhead
        self.stop_timeout, self.start_timeout, self.boot_timeout = stop_timeout, start_timeout, boot_timeout
        self.run_root = run_root
        self.dirs = SliverDirs(self.state_dir / "slivers")
        self.slivers_dir = self.dirs.root
        self._metas = self.dirs.metas
        try:
            self.assets = assets.ensure(Path(images_dir))
        except assets.AssetError as exc:
            raise BackendError(f"qemu backend: {exc}") from None
        try:
            self.accel = accel_mod.choose(self.state_dir, self.assets, accel, deadline=probe_deadline)
        except ValueError as exc:
            raise BackendError(f"qemu backend: {exc}") from None
        self.cg = cgroups.Cgroups(prefix, node)
        self.cg.ensure_node(capacity_cpu, capacity_memory)
        self.net = Network(prefix, node, subnet)
        self.net.ensure_bridge()
        self.taps = hostres.Taps(self.net.bridge)
        self.disks = VDisks(self.state_dir / "templates")
        self._lock = threading.RLock()
        self._links = execclient.Links()
        self._cpu = CpuRate()
        for sid in self._metas:
            self._adopt(sid)

    # -- helpers ------------------------------------------------------------------------

    def _dir(self, sliver_id: str) -> Path:
        return self.dirs.dir(sliver_id)

    def _paths(self, sliver_id: str) -> launcher.RunPaths:
        return launcher.RunPaths.for_sliver(self._dir(sliver_id), self.run_root)

    def _save(self, meta: dict[str, Any]) -> None:
        self.dirs.save(meta)

    def _forget(self, sliver_id: str) -> None:
        self.dirs.remove(sliver_id)
        self._cpu.forget(sliver_id)

    def _adopt(self, sliver_id: str) -> None:
        """A running VM (left by an earlier backend, or whose logger died): keep its console logged."""
        paths = self._paths(sliver_id)
        if launcher.qemu_pid(paths) is not None and launcher.logger_pid(paths) is None:
            procs = hostres.create_leaf(self.cg, sliver_key(sliver_id), *self._limits(SliverSpec.from_wire(self._metas[sliver_id]["spec"])))
            launcher.start_logger(paths, self._dir(sliver_id) / "console.log", self.log_max_bytes, procs)

    def _limits(self, spec: SliverSpec) -> tuple[float, int]:
        return spec.cpu, spec.memory + self.memory_overhead

    def pid(self, sliver_id: str) -> int | None:
        """QEMU's pid while the VM runs (re-adoption checks, debugging)."""
        return launcher.qemu_pid(self._paths(sliver_id)) if sliver_id in self._metas else None

    def images(self) -> list[str]:
        return ["busybox"]

    # -- lifecycle ----------------------------------------------------------------------

    def create(self, spec: SliverSpec) -> SliverStatus:
        if spec.isolation not in self.kinds:
            raise BackendError(f"qemu backend does not offer isolation {spec.isolation!r}")
        if spec.image not in self.images():
            raise BackendError(f"unknown image {spec.image!r} for VMs (this node offers {', '.join(self.images())})")
        if spec.memory < self.assets.min_memory:
            raise BackendError(
                f"a VM needs at least {self.assets.min_memory >> 20} MiB of memory to boot kernel {self.assets.kernel.version} (asked for {spec.memory >> 20} MiB)"
            )
        with self._lock:
            if spec.id in self._metas:
                status = self.status(spec.id)
                return status if status.state in ("running", "pending", "failed") else self.start(spec.id)
            undo: list[Callable[[], None]] = []
            try:
                sdir, key = self._dir(spec.id), sliver_key(spec.id)
                sdir.mkdir()
                undo.append(lambda: self._forget(spec.id))
                taken = {m["address"] for m in self._metas.values()}
                meta = {"id": spec.id, "spec": spec.to_wire(), "desired": "running", "address": allocate(self.net.subnet, taken, spec.id)}
                meta["tap"] = hostres.tap_name(self.prefix, self.node, key)
                self._save(meta)
                self.disks.create(sdir / "disk.img", spec.disk)
                return self._boot(meta, undo)
            except Exception as exc:
                for step in reversed(undo):
                    with contextlib.suppress(Exception):
                        step()
                if isinstance(exc, BackendError):
                    raise
                raise BackendError(f"create failed: {exc}") from exc

    def _boot(self, meta: dict[str, Any], undo: list[Callable[[], None]], attempt: int = 1) -> SliverStatus:
        """TAP, cgroup, initrd, then QEMU; ``undo`` collects what to take back on failure."""
        spec = SliverSpec.from_wire(meta["spec"])
        sdir, key, paths = self._dir(spec.id), sliver_key(spec.id), self._paths(spec.id)
        undo.append(lambda: self.taps.teardown(meta["tap"]))
        try:
            self.taps.setup(meta["tap"], spec.bandwidth)
        except hostres.HostError as exc:
            raise BackendError(f"VM network: {exc}") from None
        undo.append(lambda: self.cg.remove(self.cg.leaf(key)))
        procs = hostres.create_leaf(self.cg, key, *self._limits(spec))
        cfg = initramfs.SliverConfig(
            hostname=hostname_for(spec.slice),
            address=f"{meta['address']}/{self.net.prefixlen}",
            gateway=self.net.gateway,
            argv=spec.command or DEFAULT_COMMAND,
            env=spec.env,
            stop_grace=max(1, int(self.stop_timeout / 2)),
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
        )
        undo.append(lambda: launcher.remove_run_dir(paths))
        undo.append(lambda: self._kill(spec.id))
        try:
            launcher.launch(vm, paths, log=sdir / "console.log", log_max_bytes=self.log_max_bytes, procs_files=procs, timeout=self.start_timeout)
        except launcher.LaunchError as exc:
            raise BackendError(str(exc)) from None
        meta.update(desired="running", started_at=time.time(), boot_attempts=attempt)
        meta.pop("oom_kills", None)
        meta.pop("boot_failure", None)
        self._save(meta)
        self._cpu.forget(spec.id)
        return SliverStatus(spec.id, "pending", "booting")

    def _kill(self, sliver_id: str) -> None:
        """SIGKILL QEMU and its logger, wait for both (their cgroup can go only then)."""
        paths = self._paths(sliver_id)
        for pid in (launcher.qemu_pid(paths), launcher.logger_pid(paths)):
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                sliverio.wait_gone(pid, 5.0)
        self._links.drop(sliver_id)

    def _release_runtime(self, sliver_id: str) -> None:
        """What a stopped VM no longer needs: its cgroup (after noting OOM kills) and sockets."""
        meta = self._metas.get(sliver_id)
        key = sliver_key(sliver_id)
        cg = self.cg.usage(key)
        if meta is not None and cg is not None and cg.oom_kills:
            meta["oom_kills"] = cg.oom_kills
            self._save(meta)
        self.cg.remove(self.cg.leaf(key))
        launcher.remove_run_dir(self._paths(sliver_id))

    def start(self, sliver_id: str) -> SliverStatus:
        with self._lock:
            meta = self._metas.get(sliver_id)
            if meta is None:
                raise BackendError(f"no sliver {sliver_id!r} on this node")
            if self.pid(sliver_id) is not None:
                return self.status(sliver_id)
            self._kill(sliver_id)  # a logger left behind
            self._release_runtime(sliver_id)
            undo: list[Callable[[], None]] = []
            try:
                return self._boot(meta, undo)
            except Exception as exc:
                for step in reversed(undo):
                    with contextlib.suppress(Exception):
                        step()
                raise exc if isinstance(exc, BackendError) else BackendError(f"start failed: {exc}") from exc

    def stop(self, sliver_id: str) -> SliverStatus:
        with self._lock:
            meta = self._metas.get(sliver_id)
            if meta is None:
                return SliverStatus(sliver_id, "lost", "no such sliver")
            meta["desired"] = "stopped"
            self._save(meta)
            paths = self._paths(sliver_id)
            pid = launcher.qemu_pid(paths)
            if pid is not None:
                launcher.shutdown(paths, pid, self.stop_timeout)
            self._kill(sliver_id)
            self._release_runtime(sliver_id)
            return SliverStatus(sliver_id, "stopped")

    def destroy(self, sliver_id: str) -> None:
        with self._lock:
            key = sliver_key(sliver_id)
            self._kill(sliver_id)
            self.cg.remove(self.cg.leaf(key))
            launcher.remove_run_dir(self._paths(sliver_id))
            self.taps.teardown(hostres.tap_name(self.prefix, self.node, key))
            self._forget(sliver_id)

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
            alive = launcher.qemu_pid(self._paths(sliver_id)) is not None
            events = self._events(sliver_id)
            if alive and self._boot_overdue(meta, events):
                return self._reboot_or_fail(meta)
            if alive:
                self._adopt(sliver_id)  # a console logger that died is replaced
            cg = None if alive else self.cg.usage(sliver_key(sliver_id))
            oom = cg.oom_kills if cg is not None else int(meta.get("oom_kills", 0))
            state, reason = vmstate.vm_state(alive, meta["desired"], oom, events)
            if not alive and meta.get("boot_failure") and meta["desired"] == "running":
                state, reason = "failed", str(meta["boot_failure"])
            return SliverStatus(sliver_id, state, reason, self.usage(sliver_id) if state == "running" else None)

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
        self._save(meta)
        return SliverStatus(sid, "failed", str(meta["boot_failure"]))

    def list(self) -> builtins.list[SliverStatus]:
        return [self.status(sid) for sid in builtins.list(self._metas)]

    def usage(self, sliver_id: str) -> Usage:
        """QEMU's CPU and memory as its cgroup counts them (the guest's RAM as QEMU has touched
        it, plus QEMU's own), and the TAP's traffic."""
        meta = self._metas.get(sliver_id)
        cg = self.cg.usage(sliver_key(sliver_id)) if meta else None
        if meta is None or cg is None:
            return Usage()
        rx, tx = self.taps.counters(meta["tap"])
        return Usage(
            cpu_seconds=cg.cpu_seconds,
            cpu_cores=self._cpu.cores(sliver_id, cg.cpu_seconds, float(meta.get("started_at", time.time()))),
            memory=cg.memory,
            memory_peak=cg.memory_peak,
            oom_kills=cg.oom_kills,
            pids=cg.pids,
            net_rx=rx,
            net_tx=tx,
        )

    def _link(self, sliver_id: str) -> execclient.Link:
        with self._lock:
            if sliver_id not in self._metas:
                raise BackendError(f"no sliver {sliver_id!r} on this node")
            if self.pid(sliver_id) is None:
                raise BackendError(f"sliver {sliver_id!r} is not running")
            return self._links.get(sliver_id, self._paths(sliver_id).agent)

    def guest_memory(self, sliver_id: str, timeout: float = 5.0) -> dict[str, int]:
        """The guest's own view of its memory (MemTotal, MemAvailable, ... in bytes)."""
        try:
            return execclient.guest_meminfo(self._link(sliver_id), timeout)
        except execclient.AgentError as exc:
            raise BackendError(str(exc)) from None

    def exec(self, sliver_id: str, argv: builtins.list[str], timeout: float) -> Iterator[tuple[str, bytes]]:
        link = self._link(sliver_id)
        try:
            protocol.exec_payload(argv)
        except protocol.ProtocolError as exc:
            raise BackendError(str(exc)) from None
        return self._exec(link, argv, timeout)

    @staticmethod
    def _exec(link: execclient.Link, argv: builtins.list[str], timeout: float) -> Iterator[tuple[str, bytes]]:
        try:
            yield from execclient.run(link, argv, timeout)
        except execclient.AgentError as exc:
            raise BackendError(str(exc)) from None

    def logs(self, sliver_id: str, offset: int | None, limit: int) -> tuple[bytes, int]:
        if sliver_id not in self._metas:
            raise BackendError(f"no sliver {sliver_id!r} on this node")
        return sliverio.read_log(self._dir(sliver_id) / "console.log", offset, limit)

    def flush(self) -> None:
        """Nothing to batch: each sliver's record is written as it changes."""

    def close(self) -> None:
        """Drop connections; VMs keep running."""
        self._links.close()
        self.taps.close()
        self.net.close()

    def forget_node(self) -> None:
        """Remove the node bridge and cgroup parent; only when no sliver is left (tests, uninstall)."""
        self.net.remove_bridge()
        self.cg.remove_node()
        self.close()
