"""The three ways ``slicemesh bench isolation`` runs the same work: a bare process, a container
sliver, a VM sliver, all on one node; plus a bare QEMU boot and a TCP sink on the host.

Each kind offers the same four things (``Kind``): start one guest and say how long until its
command ran; the host memory of an idle one; run a shell script in a long-lived one and return
its output; stop everything. Scripts time themselves with ``/proc/uptime`` (10 ms steps), so
the cost of getting a command into a guest (runc exec, the guest agent) is not counted as work.
Every script runs under the same static busybox (the image's ``/bin/busybox``).
"""

from __future__ import annotations

import math
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from node_agent.backends.base import collected
from node_agent.backends.qemu import initramfs, launcher
from node_agent.backends.qemu.backend import QemuBackend
from node_agent.backends.runc.backend import RuncBackend
from node_agent.machine_resources import MachineResources, sliver_key
from slices.model import Resources, SliverSpec
from slices.waiting import wait_until

MiB = 1 << 20
IDLE = "echo started; exec sleep 100000"
BOOT_S = 300.0  # a TCG guest on a busy 2-core host


def rss(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/status").read_text().split("VmRSS:")[1].split()[0]) * 1024
    except (OSError, IndexError, ValueError):
        return 0


class Kind(Protocol):
    name: str
    #: where a workload writes files: the sliver's own disk (``/root``), or the bare work dir
    disk_dir: str

    def start_once(self, i: int) -> float: ...

    def idle_memory(self, settle: float) -> tuple[int, int | None]: ...

    def run(self, script: str, timeout: float) -> str: ...

    def close(self) -> None: ...


class Bare:
    """A plain process on the host: the floor the other two are measured against."""

    name = "bare"

    def __init__(self, busybox: Path, work: Path) -> None:
        self.busybox, self.work = busybox, work
        self.disk_dir = str(work)
        work.mkdir(parents=True, exist_ok=True)

    def _spawn(self, script: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen([str(self.busybox), "sh", "-c", script], cwd=self.work, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, env={"PATH": "/bin:/usr/bin"})

    def start_once(self, i: int) -> float:
        t0 = time.perf_counter()
        proc = self._spawn(IDLE)
        assert proc.stdout is not None
        proc.stdout.readline()
        took = time.perf_counter() - t0
        proc.kill()
        proc.wait()
        proc.stdout.close()
        return took

    def idle_memory(self, settle: float) -> tuple[int, int | None]:
        proc = self._spawn(IDLE)
        assert proc.stdout is not None
        proc.stdout.readline()
        time.sleep(settle)
        used = rss(proc.pid)
        proc.kill()
        proc.wait()
        proc.stdout.close()
        return used, None

    def run(self, script: str, timeout: float) -> str:
        done = subprocess.run([str(self.busybox), "sh", "-c", script], capture_output=True, text=True, timeout=timeout, cwd=self.work, env={"PATH": "/bin:/usr/bin"})
        if done.returncode != 0:
            raise RuntimeError(f"bare: {script[:60]!r} exited {done.returncode}: {done.stderr.strip()[-300:]}")
        return done.stdout

    def close(self) -> None:
        shutil.rmtree(self.work, ignore_errors=True)


class Sliver:
    """A container or VM sliver through its backend on the bench node; ``work`` is the sliver
    the workloads run in, the others come and go for the start-up figures."""

    def __init__(self, backend: RuncBackend | QemuBackend, kind: str, resources: Resources) -> None:
        self.backend, self.kind, self.resources = backend, kind, resources
        self.name = "container" if kind == "container" else "vm"
        self.disk_dir = "/root"
        self.work: str | None = None

    def spec(self, sid: str, resources: Resources | None = None, command: str = IDLE) -> SliverSpec:
        """Sliver ids are unique per node whatever the kind (they name cgroup leaves): each
        carries its kind, as a real one carries its slice's random suffix."""
        return SliverSpec(id=f"{self.name}-{sid}", slice="bench", isolation=self.kind, image="busybox", resources=resources or self.resources, command=("sh", "-c", command))

    def running(self, sid: str, timeout: float = BOOT_S) -> None:
        """Until the sliver's command runs; a failure (OOM, boot error) raises with its reason."""

        def settled() -> bool:
            st = self.backend.status(sid)
            if st.state in ("failed", "lost", "stopped"):
                raise RuntimeError(f"{self.name} {sid}: {st.state} ({st.reason})")
            return st.state == "running"

        wait_until(settled, timeout, f"{self.name} {sid} running", max_delay=0.05)

    def start_once(self, i: int) -> float:
        spec = self.spec(f"start{i}")
        t0 = time.perf_counter()
        if self.backend.create(spec).state != "running":  # a container runs once created
            self.running(spec.id)
        took = time.perf_counter() - t0
        self.backend.destroy(spec.id)
        return took

    def ensure_work(self) -> str:
        if self.work is None:
            spec = self.spec("work")
            self.backend.create(spec)
            self.running(spec.id)
            self.work = spec.id
        return self.work

    def idle_memory(self, settle: float) -> tuple[int, int | None]:
        sid = self.ensure_work()
        time.sleep(settle)
        cg = self.backend.cg.usage(sliver_key(sid))
        pids = self.backend.cg.pids(sliver_key(sid))
        return sum(rss(p) for p in pids), cg.memory if cg else None

    def run(self, script: str, timeout: float) -> str:
        code, out, err = collected(self.backend.exec(self.ensure_work(), ["sh", "-c", script], timeout))
        if code != 0:
            raise RuntimeError(f"{self.name}: {script[:60]!r} exited {code}: {err.decode(errors='replace').strip()[-300:]}")
        return out.decode()

    def close(self) -> None:
        for st in self.backend.list():
            self.backend.destroy(st.id)


def density(kind: Sliver, memory: int, bound: int) -> tuple[int, bool, int]:
    """Idle guests of ``memory`` started one after another on the node (its cgroup holds the
    budget) until one fails to start or to stay up, or ``bound`` run: (running, one failed,
    host memory of all of them by their cgroups)."""
    started: list[str] = []
    failed = False
    res = Resources(cpu=1.0, memory=memory, disk=64 * MiB)  # a core: a TCG boot is CPU-bound
    try:
        for i in range(bound):
            spec = kind.spec(f"dense{i}", res)
            sid = spec.id
            try:
                kind.backend.create(spec)
                kind.running(sid)
            except Exception:
                failed = True
                break
            started.append(sid)
            if any(kind.backend.status(s).state != "running" for s in started):
                failed = True
                break
        up = [s for s in started if kind.backend.status(s).state == "running"]
        used = sum(u.memory for s in up if (u := kind.backend.cg.usage(sliver_key(s))) is not None)
        return len(up), failed, used
    finally:
        for st in kind.backend.list():
            if "-dense" in st.id:
                kind.backend.destroy(st.id)


class BareQemu:
    """``qemu-system-x86_64`` run directly with the VM backend's kernel, base initramfs, sliver
    archive, kernel command line and a disk like its, to the guest's ``running`` event: the
    floor any QEMU backend stands on."""

    def __init__(self, vm: QemuBackend, work: Path, res: Resources) -> None:
        self.vm, self.work, self.memory_mib, self.cpus = vm, work, res.memory // MiB, vcpus(res.cpu)
        work.mkdir(parents=True, exist_ok=True)
        initramfs.write_initrd(vm.assets.initramfs, initramfs.SliverConfig("bare", None, None, ("sh", "-c", IDLE), {}), work / "initrd")
        self.template = vm.machine.disks.template(res.disk)

    def boot_once(self) -> float:
        shutil.copyfile(self.template, self.work / "disk.img")
        events = self.work / "events"
        events.unlink(missing_ok=True)
        cfg = launcher.VmConfig(
            "bare", self.vm.assets.kernel.image, self.work / "initrd", self.memory_mib, self.cpus, self.work / "disk.img", events,
            "52:54:00:00:00:01", None, self.vm.accel.name, self.vm.accel.tsc_khz,
        )  # fmt: skip
        argv = [
            launcher.QEMU, "-M", "microvm,x-option-roms=off,rtc=on,isa-serial=on", "-accel", f"tcg,tb-size={cfg.tb_size_mib}" if cfg.accel == "tcg" else cfg.accel,
            "-cpu", "max", "-m", f"{cfg.memory_mib}M", "-smp", str(cfg.cpus), "-nodefaults", "-no-user-config", "-no-reboot", "-display", "none",
            "-kernel", str(cfg.kernel), "-initrd", str(cfg.initrd), "-append", launcher.kernel_cmdline(cfg), "-serial", f"file:{self.work / 'console.log'}",
            "-drive", f"id=disk,file={cfg.disk},format=raw,if=none", "-device", "virtio-blk-device,drive=disk",
            "-device", "virtio-serial-device,max_ports=3", "-chardev", f"file,id=events,path={events}",
            "-device", "virtserialport,chardev=events,name=org.slicemesh.events.0",
        ]  # fmt: skip
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_until(lambda: events.exists() and b'"running"' in events.read_bytes(), BOOT_S, "the bare guest's command", max_delay=0.05)
            return time.perf_counter() - t0
        finally:
            proc.kill()
            proc.wait()


class Sink:
    """A TCP server on the host that counts what one sender sends: the receiving end of the
    network workload, timed from the first byte to the last. Made before the node, listening on
    every address (so on the bridge's once it exists), so that the node's firewall can be told
    to let slivers reach its port (``host_access``)."""

    def __init__(self) -> None:
        self.server = socket.create_server(("0.0.0.0", 0))
        self.port = self.server.getsockname()[1]

    @property
    def access(self) -> str:
        """The ``sliver_host_access`` entry that opens it to slivers."""
        return f"tcp/{self.port}"

    def receive(self, send: Any, timeout: float) -> float:
        """Run ``send()`` (which makes a sender connect and send); bytes/s as received."""
        got: dict[str, float] = {}

        def serve() -> None:
            self.server.settimeout(timeout)
            conn, _ = self.server.accept()
            with conn:
                conn.settimeout(timeout)
                n, first = 0, 0.0
                while chunk := conn.recv(1 << 16):
                    if not n:
                        first = time.perf_counter()
                    n += len(chunk)
                got.update(bytes=n, seconds=time.perf_counter() - first)

        t = threading.Thread(target=serve, daemon=True)
        t.start()
        send()
        t.join(timeout)
        if not got.get("bytes"):
            raise RuntimeError("the sink received nothing")
        return got["bytes"] / max(got["seconds"], 1e-6)

    def close(self) -> None:
        self.server.close()


def vcpus(cpu: float) -> int:
    return max(1, math.ceil(cpu))


def node(state: Path, prefix: str, images_dir: Path, memory: int, host_access: Sequence[str]) -> MachineResources:
    return MachineResources(state / "node", "isolation", prefix=prefix, capacity_cpu=2.0, capacity_memory=memory, images_dir=images_dir, host_access=host_access)
