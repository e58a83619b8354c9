"""Starting and stopping one VM's QEMU: the command line (pure), the processes, the shutdown.

Shape of a VM (QEMU 7.2, ``microvm``, direct kernel boot, no firmware, no PCI):

* virtio-mmio devices: the sliver's disk (virtio-blk), its NIC on a TAP of the node bridge
  (virtio-net), and a virtio-serial bus with two named ports: ``org.slicemesh.agent.0``
  (exec, a unix socket; protocol.py) and ``org.slicemesh.events.0`` (a file the guest appends
  JSON lines to: command running, exit status, boot errors).
* the serial console is a unix socket read by the console logger (consolelog.py).
* QMP on a unix socket; ``-daemonize`` + ``-pidfile``: QEMU leaves its own session and
  outlives the agent; its parent returns only once the VM is set up, so errors such as a
  missing TAP come back on stderr with a non-zero exit.

Both processes start as ``sh``, held on a pipe until the agent has moved it into the sliver's
cgroup leaf (``join``, i.e. ``MachineResources.cg.join``), and only then exec: QEMU is inside
its memory and CPU limits from its first allocation, so its early memory (guest RAM set-up,
the translation cache) is charged to the sliver, not the agent (and no thread-unsafe
``preexec_fn`` is needed in a threaded agent).

Sockets live under /run/slicemesh/vm/<hash of the sliver dir>/: unix socket paths are limited
to 108 bytes, which a deep state directory would exceed.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node_agent.backends.qemu import consolelog, qmp
from node_agent.processes import wait_gone

RUN_ROOT = Path("/run/slicemesh/vm")
QEMU = "qemu-system-x86_64"
#: Waits for a line on stdin (sent once the process is in its cgroup), then execs the rest.
HELD = 'read go || exit 125; exec "$@"'
#: Moves a process (by pid) into the sliver's cgroup leaf; raises when it cannot.
Join = Callable[[int], None]


class LaunchError(Exception):
    pass


@dataclass(frozen=True)
class RunPaths:
    """Where one VM's sockets and QEMU's own files are."""

    run: Path

    @classmethod
    def for_sliver(cls, sliver_dir: Path, root: Path = RUN_ROOT) -> RunPaths:
        return cls(root / hashlib.sha1(str(sliver_dir).encode()).hexdigest()[:16])

    qmp = property(lambda self: self.run / "qmp.sock")
    agent = property(lambda self: self.run / "agent.sock")
    console = property(lambda self: self.run / "console.sock")
    pidfile = property(lambda self: self.run / "qemu.pid")
    logger_pidfile = property(lambda self: self.run / "console.pid")
    tls = property(lambda self: self.run / "tls")  # a live move's pre-shared key, while it lasts (livemove.py)


@dataclass(frozen=True)
class VmConfig:
    name: str
    kernel: Path
    initrd: Path
    memory_mib: int
    cpus: int
    disk: Path
    events: Path
    mac: str
    tap: str | None
    accel: str = "tcg"  # "kvm" or "tcg"
    tsc_khz: int | None = None  # TCG guests cannot calibrate their TSC reliably on a busy host
    tb_size_mib: int = 32  # TCG translation cache; QEMU's default (1 GiB) would dominate RSS
    rtc: bool = True
    qemu: str = QEMU
    incoming: bool = False  # wait for a live migration (``migrate-incoming``) instead of booting
    code: Path | None = None  # the slice's code as a read-only ext4 image: the guest's /dev/vdb, mounted at /code


def mac_for(key: str) -> str:
    """A stable locally administered MAC (QEMU's 52:54:00 prefix) from the sliver key."""
    h = hashlib.sha1(key.encode()).digest()
    return f"52:54:00:{h[0]:02x}:{h[1]:02x}:{h[2]:02x}"


#: Boot work a sliver's guest does not need (audit, extra UART probes, the IO-APIC timer
#: check). Not ``cryptomgr.notests``: with it 1 of 9 TCG boots on a busy host hung for good at
#: "Loading compiled-in X.509 certificates" (0 of 27 without it).
LEAN_BOOT = ("audit=0", "8250.nr_uarts=1", "no_timer_check", "random.trust_cpu=on")


def kernel_cmdline(cfg: VmConfig, extra: str = "") -> str:
    # loglevel=3 keeps boot-time noise (microvm has no PCI: "PCI: Fatal: ...") out of the
    # sliver's log; init restores the usual level, so an OOM kill in the guest still shows.
    args = ["console=ttyS0", "panic=-1", "quiet", "loglevel=3", *LEAN_BOOT]
    if cfg.accel == "tcg":
        # Emulated instruction by instruction, the guest kernel's speculation mitigations are
        # a good part of a TCG boot; they protect the slice's own processes from each other
        # in a guest the slice owns alone. A KVM guest keeps them.
        args.append("mitigations=off")
        if cfg.tsc_khz:
            # Without these a TCG guest sometimes fails to calibrate its TSC against the PIT
            # on a busy host and then hangs in early boot; under TCG the guest TSC is the host's.
            args += [f"tsc_early_khz={cfg.tsc_khz}", "tsc=reliable"]
    return " ".join(args + ([extra] if extra else []))


def qemu_argv(cfg: VmConfig, paths: RunPaths, *, extra_cmdline: str = "") -> list[str]:
    """The full QEMU command line for ``cfg`` (pure)."""
    machine = f"microvm,x-option-roms=off,rtc={'on' if cfg.rtc else 'off'},isa-serial=on"
    accel = f"tcg,tb-size={cfg.tb_size_mib}" if cfg.accel == "tcg" else cfg.accel
    argv = [
        cfg.qemu, "-name", f"guest={cfg.name}", "-M", machine, "-accel", accel, "-cpu", "max",
        "-m", f"{cfg.memory_mib}M", "-smp", str(cfg.cpus),
        "-nodefaults", "-no-user-config", "-no-reboot", "-display", "none",
        "-kernel", str(cfg.kernel), "-initrd", str(cfg.initrd), "-append", kernel_cmdline(cfg, extra_cmdline),
        "-chardev", f"socket,id=console,path={paths.console},server=on,wait=on", "-serial", "chardev:console",
        "-drive", f"id=disk,file={cfg.disk},format=raw,if=none,discard=unmap,node-name=disk0", "-device", "virtio-blk-device,drive=disk",
    ]  # fmt: skip
    if cfg.code is not None:
        argv += ["-drive", f"id=code,file={cfg.code},format=raw,if=none,readonly=on", "-device", "virtio-blk-device,drive=code"]
    if cfg.tap:
        argv += ["-netdev", f"tap,id=net,ifname={cfg.tap},script=no,downscript=no", "-device", f"virtio-net-device,netdev=net,mac={cfg.mac}"]
    argv += [
        "-device", "virtio-serial-device,max_ports=3",
        "-chardev", f"socket,id=agent,path={paths.agent},server=on,wait=off",
        "-device", "virtserialport,chardev=agent,name=org.slicemesh.agent.0",
        "-chardev", f"file,id=events,path={cfg.events}",
        "-device", "virtserialport,chardev=events,name=org.slicemesh.events.0",
        "-qmp", f"unix:{paths.qmp},server=on,wait=off",
        "-pidfile", str(paths.pidfile), "-daemonize",
    ]  # fmt: skip
    if cfg.incoming:
        argv += ["-incoming", "defer"]
    return argv


def start_joined(argv: list[str], join: Join, **popen: Any) -> subprocess.Popen[Any]:
    """Start ``argv`` in its own session, inside the cgroup ``join`` moves it to, before it runs.

    The process starts as ``sh`` blocked on its stdin; once ``join`` has moved it, a line on
    that pipe lets it exec ``argv``, whose every allocation is then charged to the leaf. If
    ``join`` raises, the held process is killed and the error passes on."""
    proc = subprocess.Popen(["sh", "-c", HELD, "sh", *argv], stdin=subprocess.PIPE, start_new_session=True, cwd="/", **popen)
    assert proc.stdin is not None
    try:
        join(proc.pid)
    except BaseException:
        proc.kill()
        proc.communicate()
        raise
    proc.stdin.write(b"go\n")
    proc.stdin.close()
    proc.stdin = None  # done with: ``communicate`` must not flush it
    return proc


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def running_pid(pidfile: Path, marker: str) -> int | None:
    """The pid in ``pidfile`` if that process runs and its command line names ``marker``
    (a recycled pid is not our process)."""
    pid = _read_pid(pidfile)
    if pid is None:
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None
    return pid if marker.encode() in cmdline and state != "Z" else None


def qemu_pid(paths: RunPaths) -> int | None:
    return running_pid(paths.pidfile, str(paths.pidfile))


def logger_pid(paths: RunPaths) -> int | None:
    return running_pid(paths.logger_pidfile, str(paths.console))


def start_logger(paths: RunPaths, log: Path, max_bytes: int, join: Join) -> int:
    """Start the console logger in its own session and the sliver's cgroup (it outlives the
    agent, like QEMU)."""
    argv = [sys.executable, "-I", "-S", consolelog.__file__, str(paths.console), str(log), str(max_bytes)]
    proc = start_joined(argv, join, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    paths.logger_pidfile.write_text(f"{proc.pid}\n")
    return proc.pid


def launch(cfg: VmConfig, paths: RunPaths, *, log: Path, log_max_bytes: int, join: Join, timeout: float = 30.0) -> int:
    """Start the console logger and QEMU (daemonized), both in the sliver's cgroup; QEMU's pid
    once the VM is set up. ``join`` errors pass on as they are (nothing is left running)."""
    paths.run.mkdir(parents=True, exist_ok=True)
    for stale in (paths.qmp, paths.agent, paths.console, paths.pidfile):
        stale.unlink(missing_ok=True)
    with contextlib.suppress(FileNotFoundError):
        cfg.events.unlink()
    logger = start_logger(paths, log, log_max_bytes, join)
    stderr = b""
    try:
        proc = start_joined(qemu_argv(cfg, paths), join, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            stderr = proc.communicate(timeout=timeout)[1]
            code: int | None = proc.returncode
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            code = None
    except BaseException:
        _kill_quietly(logger)
        raise
    pid = _read_pid(paths.pidfile)
    if code != 0 or pid is None:
        _kill_quietly(logger)
        if pid is not None:
            _kill_quietly(pid)
        if code is None:
            raise LaunchError(f"QEMU did not finish starting within {timeout:g} s")
        lines = [ln for ln in stderr.decode(errors="replace").strip().splitlines() if ln.strip()]
        raise LaunchError(f"QEMU failed to start: {lines[-1] if lines else f'exit status {code}'}")
    return pid


def _kill_quietly(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def shutdown(paths: RunPaths, pid: int, grace: float) -> str:
    """Stop QEMU: ``system_powerdown`` (the guest stops its command and powers off) within
    ``grace`` seconds, else ``quit``, else SIGKILL. Says which step ended it."""
    steps: list[tuple[str, float]] = [("system_powerdown", grace), ("quit", 3.0)]
    for command, wait in steps:
        try:
            qmp.execute(paths.qmp, [(command, None)], timeout=2.0)
        except qmp.QmpError:
            pass  # QEMU may be exiting already; the wait below decides
        if wait_gone(pid, wait):
            return command
    _kill_quietly(pid)
    wait_gone(pid, 5.0)
    return "kill"


def forget_psk(tls_dir: Path) -> None:
    """Remove a live move's key file (livemove.py writes it) and its directory."""
    (tls_dir / "keys.psk").unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        tls_dir.rmdir()


def remove_run_dir(paths: RunPaths) -> None:
    for name in ("qmp.sock", "agent.sock", "console.sock", "qemu.pid", "console.pid"):
        (paths.run / name).unlink(missing_ok=True)
    forget_psk(paths.tls)
    with contextlib.suppress(FileNotFoundError, OSError):
        paths.run.rmdir()
