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

Both processes start through ``sh``, which writes its own pid into the sliver's cgroups
and then execs: QEMU is inside its memory and CPU limits from its first allocation (no
thread-unsafe ``preexec_fn`` in a threaded agent).

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
from dataclasses import dataclass
from pathlib import Path

from node_agent import sliverio
from node_agent.backends.qemu import consolelog, qmp

RUN_ROOT = Path("/run/slicemesh/vm")
QEMU = "qemu-system-x86_64"
# Writes its pid to each file before "--", then execs the rest (joins cgroups before exec).
JOIN_AND_EXEC = 'while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@"'


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
        "-drive", f"id=disk,file={cfg.disk},format=raw,if=none,discard=unmap", "-device", "virtio-blk-device,drive=disk",
    ]  # fmt: skip
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
    return argv


def _joined(procs_files: list[Path], argv: list[str]) -> list[str]:
    return ["sh", "-c", JOIN_AND_EXEC, "sh", *map(str, procs_files), "--", *argv]


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


def start_logger(paths: RunPaths, log: Path, max_bytes: int, procs_files: list[Path]) -> int:
    """Start the console logger in its own session (it outlives the agent, like QEMU)."""
    argv = [sys.executable, "-I", "-S", consolelog.__file__, str(paths.console), str(log), str(max_bytes)]
    proc = subprocess.Popen(
        _joined(procs_files, argv), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, cwd="/"
    )
    paths.logger_pidfile.write_text(f"{proc.pid}\n")
    return proc.pid


def launch(cfg: VmConfig, paths: RunPaths, *, log: Path, log_max_bytes: int, procs_files: list[Path], timeout: float = 30.0) -> int:
    """Start the console logger and QEMU (daemonized); QEMU's pid once the VM is set up."""
    paths.run.mkdir(parents=True, exist_ok=True)
    for stale in (paths.qmp, paths.agent, paths.console, paths.pidfile):
        stale.unlink(missing_ok=True)
    with contextlib.suppress(FileNotFoundError):
        cfg.events.unlink()
    logger = start_logger(paths, log, log_max_bytes, procs_files)
    try:
        proc = subprocess.run(_joined(procs_files, qemu_argv(cfg, paths)), stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        proc = None
    pid = _read_pid(paths.pidfile)
    if proc is None or proc.returncode != 0 or pid is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(logger, signal.SIGKILL)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if proc is None:
            raise LaunchError(f"QEMU did not finish starting within {timeout:g} s")
        if proc.returncode == 125:
            raise LaunchError("cannot put QEMU into the sliver's cgroup")
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        raise LaunchError(f"QEMU failed to start: {lines[-1] if lines else f'exit status {proc.returncode}'}")
    return pid


def shutdown(paths: RunPaths, pid: int, grace: float) -> str:
    """Stop QEMU: ``system_powerdown`` (the guest stops its command and powers off) within
    ``grace`` seconds, else ``quit``, else SIGKILL. Says which step ended it."""
    steps: list[tuple[str, float]] = [("system_powerdown", grace), ("quit", 3.0)]
    for command, wait in steps:
        try:
            qmp.execute(paths.qmp, [(command, None)], timeout=2.0)
        except qmp.QmpError:
            pass  # QEMU may be exiting already; the wait below decides
        if sliverio.wait_gone(pid, wait):
            return command
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    sliverio.wait_gone(pid, 5.0)
    return "kill"


def remove_run_dir(paths: RunPaths) -> None:
    for name in ("qmp.sock", "agent.sock", "console.sock", "qemu.pid", "console.pid"):
        (paths.run / name).unlink(missing_ok=True)
    with contextlib.suppress(FileNotFoundError, OSError):
        paths.run.rmdir()
