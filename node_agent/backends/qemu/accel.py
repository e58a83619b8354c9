"""Which accelerator VMs use on this node: KVM where a guest really boots with it, else TCG.

``/dev/kvm`` existing proves little: on nested hosts ``KVM_CREATE_VM`` succeeds and the guest
then hangs in early boot. So the agent boots a tiny guest (the real kernel and initramfs, told
by ``slicemesh.probe`` on its command line to print a marker and power off at once) with KVM
and a deadline, once per host: the answer is kept in ``<images>/vm/accel.json`` (beside the
kernel it was probed with) together with what it depended on (QEMU's version, the kernel,
whether /dev/kvm exists), so later starts, and every simulated machine of ``slicemesh sim``,
reuse it and a changed host probes again. The ``qemu.accelerator`` setting can force either.

The host's TSC frequency is measured here too: a TCG guest's TSC *is* the host's, and telling
the guest kernel its frequency avoids a calibration that fails on a busy host and then hangs
the boot (see ``launcher.kernel_cmdline``).
"""

from __future__ import annotations

import ctypes
import functools
import json
import mmap
import os
import platform
import statistics
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from node_agent.backends.qemu import initramfs
from node_agent.backends.qemu.assets import Assets
from node_agent.backends.qemu.launcher import QEMU

MARKER = b"slicemesh-probe: ok"
CHOICES = ("auto", "kvm", "tcg")
#: rdtsc; shl rdx, 32; or rax, rdx; ret
_RDTSC = bytes.fromhex("0f3148c1e2204809d0c3")


@dataclass(frozen=True)
class Accel:
    name: str  # "kvm" or "tcg"
    reason: str  # why this one: shown next to the node (``slicemesh nodes``)
    tsc_khz: int | None = None


@functools.cache
def host_tsc_khz(window: float = 0.1) -> int | None:
    """The host TSC's frequency in kHz, timed against CLOCK_MONOTONIC_RAW; None off x86-64.

    Runs ``rdtsc`` from a page of executable memory (three instructions) rather than asking
    the kernel, which exposes the figure nowhere but its boot log. Timed once per process
    (0.3 s): every VM backend of the simulated machines in one process shares the figure. Each reading brackets the
    TSC between two clock reads and is retaken when they are far apart (the process was
    preempted in between), so the error stays near 1e-5: the guest's clock runs off this figure.
    """
    if platform.machine() not in ("x86_64", "AMD64"):
        return None
    try:
        page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    except (OSError, PermissionError):
        return None
    page.write(_RDTSC)
    rdtsc = ctypes.CFUNCTYPE(ctypes.c_uint64)(ctypes.addressof(ctypes.c_char.from_buffer(page)))

    def reading() -> tuple[float, int]:
        for _ in range(100):
            before = time.clock_gettime_ns(time.CLOCK_MONOTONIC_RAW)
            tsc = rdtsc()
            after = time.clock_gettime_ns(time.CLOCK_MONOTONIC_RAW)
            if after - before < 5_000:
                return (before + after) / 2, tsc
        return (before + after) / 2, tsc

    samples = []
    for _ in range(3):
        t0, c0 = reading()
        time.sleep(window)
        t1, c1 = reading()
        samples.append((c1 - c0) * 1_000_000 / (t1 - t0))
    khz: float = statistics.median(samples)
    return round(khz)


def qemu_version(qemu: str = QEMU) -> str:
    try:
        out = subprocess.run([qemu, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "missing"
    return out.splitlines()[0] if out else "unknown"


def probe_argv(assets: Assets, initrd: Path, log: Path, accel: str, tsc_khz: int | None = None, qemu: str = QEMU) -> list[str]:
    tsc = f" tsc_early_khz={tsc_khz} tsc=reliable" if tsc_khz and accel == "tcg" else ""
    return [
        qemu, "-M", "microvm,x-option-roms=off,rtc=on,isa-serial=on", "-accel", accel, "-cpu", "max",
        "-m", f"{assets.min_memory >> 20}M", "-smp", "1", "-nodefaults", "-no-user-config", "-no-reboot", "-display", "none",
        "-kernel", str(assets.kernel.image), "-initrd", str(initrd),
        "-append", f"console=ttyS0 panic=-1 quiet slicemesh.probe{tsc}", "-serial", f"file:{log}",
    ]  # fmt: skip


def boots_with(accel: str, assets: Assets, work: Path, deadline: float, *, tsc_khz: int | None = None, qemu: str = QEMU) -> str | None:
    """None when a guest reaches userspace with ``accel`` within ``deadline`` s; else why not."""
    work.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=work) as tmp:  # agents of one host may probe at once
        initrd, log = Path(tmp) / "probe-initrd", Path(tmp) / "probe.log"
        initramfs.write_initrd(assets.initramfs, initramfs.SliverConfig("probe", None, None, ("true",), {}), initrd)
        try:
            proc = subprocess.run(probe_argv(assets, initrd, log, accel, tsc_khz, qemu), capture_output=True, text=True, timeout=deadline)
        except subprocess.TimeoutExpired:
            return f"a {accel} guest did not reach userspace within {deadline:g} s"
        try:
            reached = MARKER in log.read_bytes()
        except OSError:
            reached = False
    if reached:
        return None
    lines = proc.stderr.strip().splitlines()
    return f"a {accel} guest failed: {lines[-1] if lines else f'QEMU exit status {proc.returncode}'}"


def choose(cache_dir: Path, assets: Assets, setting: str = "auto", *, deadline: float = 8.0, qemu: str = QEMU) -> Accel:
    """The accelerator for this node (probing KVM at most once per host configuration; the
    answer and the probe's scratch files live in ``cache_dir``)."""
    if setting not in CHOICES:
        raise ValueError(f"qemu.accelerator must be one of {', '.join(CHOICES)}, not {setting!r}")
    tsc = host_tsc_khz()
    if setting != "auto":
        return Accel(setting, "forced by the qemu.accelerator setting", tsc)
    key = {"qemu": qemu_version(qemu), "kernel": assets.kernel.version, "kvm_device": os.path.exists("/dev/kvm")}
    cache = cache_dir / "accel.json"
    try:
        saved = json.loads(cache.read_text())
        if saved.get("key") == key:
            return Accel(saved["name"], saved["reason"], tsc)
    except (OSError, ValueError, KeyError, AttributeError):
        pass
    if not key["kvm_device"]:
        result = Accel("tcg", "no /dev/kvm on this host", tsc)
    else:
        started = time.monotonic()
        why_not = boots_with("kvm", assets, cache_dir / "probe", deadline, qemu=qemu)
        if why_not is None:
            result = Accel("kvm", f"a probe guest booted in {time.monotonic() - started:.1f} s", tsc)
        else:
            result = Accel("tcg", f"kvm unusable: {why_not}", tsc)
    tmp = cache.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"key": key, **{k: v for k, v in asdict(result).items() if k != "tsc_khz"}}))
    os.replace(tmp, cache)
    return result
