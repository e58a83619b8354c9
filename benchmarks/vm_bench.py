"""VM sliver start-up against a bare QEMU boot, and what an idle VM costs the host in memory.

Measured in one run, interleaved so both see the same machine load:

* create-to-running of a ``busybox`` VM sliver through ``QemuBackend.create`` (disk from the
  template, TAP, cgroup, initrd, console logger, daemonized QEMU) until the guest reports its
  command running (the ``running`` event);
* ``qemu-system-x86_64`` run directly with the same kernel, base initramfs, sliver archive,
  kernel command line and disk, to the same event: the floor any QEMU backend stands on.
  Goal: p50 <= 1.2x bare.

Also: QEMU's RSS and its cgroup's memory for an idle guest of the smallest bootable size and
of 128 MiB, ten seconds after its command started. Needs root and `make setup` (kernel).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from node_agent import images
from node_agent.backends.qemu import QemuBackend, initramfs, launcher
from node_agent.vdisk import VDisks
from slices.model import SliverSpec

MiB = 1 << 20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-n", type=int, default=5, help="boots per variant (each costs seconds of CPU under TCG)")


def _running(events: Path) -> bool:
    try:
        return b'"running"' in events.read_bytes()
    except OSError:
        return False


def _wait(pred: Any, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError("the guest did not report its command running")
        time.sleep(0.01)


def _bare_boot(b: QemuBackend, work: Path, disk_template: Path) -> float:
    """Seconds from exec of a plain qemu-system-x86_64 to the guest's "running" event."""
    cfg = initramfs.SliverConfig("bare", None, None, ("sleep", "1000"), {})
    initramfs.write_initrd(b.assets.initramfs, cfg, work / "initrd")
    shutil.copyfile(disk_template, work / "disk.img")
    events = work / "events"
    events.unlink(missing_ok=True)
    vm = launcher.VmConfig(
        "bare", b.assets.kernel.image, work / "initrd", 128, 1, work / "disk.img", events, "52:54:00:00:00:01", None, b.accel.name, b.accel.tsc_khz
    )
    argv = [
        launcher.QEMU, "-M", "microvm,x-option-roms=off,rtc=on,isa-serial=on", "-accel", f"tcg,tb-size={vm.tb_size_mib}" if vm.accel == "tcg" else vm.accel,
        "-cpu", "max", "-m", "128M", "-smp", "1", "-nodefaults", "-no-user-config", "-no-reboot", "-display", "none",
        "-kernel", str(vm.kernel), "-initrd", str(vm.initrd), "-append", launcher.kernel_cmdline(vm), "-serial", f"file:{work / 'console.log'}",
        "-drive", f"id=disk,file={vm.disk},format=raw,if=none", "-device", "virtio-blk-device,drive=disk",
        "-device", "virtio-serial-device,max_ports=3", "-chardev", f"file,id=events,path={events}",
        "-device", "virtserialport,chardev=events,name=org.slicemesh.events.0",
    ]  # fmt: skip
    started = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait(lambda: _running(events))
        return time.monotonic() - started
    finally:
        proc.kill()
        proc.wait()


def _backend_boot(b: QemuBackend, sid: str) -> float:
    started = time.monotonic()
    b.create(SliverSpec(id=sid, slice="bench", isolation="vm", image="busybox", cpu=1.0, memory=128 * MiB, command=("sleep", "1000")))
    _wait(lambda: b.status(sid).state == "running")
    took = time.monotonic() - started
    b.destroy(sid)
    return took


def _idle_memory(b: QemuBackend, memory: int) -> dict[str, float]:
    sid = f"idle{memory >> 20}"
    b.create(SliverSpec(id=sid, slice="bench", isolation="vm", image="busybox", cpu=1.0, memory=memory, command=("sleep", "1000")))
    try:
        _wait(lambda: b.status(sid).state == "running")
        time.sleep(10)
        pid = b.pid(sid)
        rss = int(Path(f"/proc/{pid}/status").read_text().split("VmRSS:")[1].split()[0]) * 1024
        usage = b.usage(sid)
        total = b.guest_memory(sid)["MemTotal"]
        return {"rss_mib": rss / MiB, "cgroup_mib": usage.memory / MiB, "guest_memtotal_mib": total / MiB, "cpu_cores_idle": usage.cpu_cores}
    finally:
        b.destroy(sid)


def run(n: int | argparse.Namespace = 5, json_out: bool = False) -> dict[str, Any]:
    if isinstance(n, argparse.Namespace):
        json_out = bool(getattr(n, "json", False))
        n = int(n.n)
    with tempfile.TemporaryDirectory(prefix="vmbench") as tmp:
        root = Path(tmp)
        b = QemuBackend(
            root / "state", "bench", prefix=f"vmb{int(time.time()) % 10000}", capacity_cpu=2.0, capacity_memory=4 << 30, images_dir=images.DEFAULT_DIR
        )
        try:
            template = VDisks(root / "templates").template(1 << 30)
            (root / "bare").mkdir()
            backend, bare = [], []
            for i in range(n):
                bare.append(_bare_boot(b, root / "bare", template))
                backend.append(_backend_boot(b, f"s{i}"))
            result: dict[str, Any] = {
                "accel": b.accel.name,
                "boots_per_variant": n,
                "backend_create_to_running_p50_s": round(statistics.median(backend), 2),
                "bare_qemu_to_running_p50_s": round(statistics.median(bare), 2),
                "ratio_p50": round(statistics.median(backend) / statistics.median(bare), 3),
                "memory_overhead_setting_mib": b.memory_overhead / MiB,
                f"idle_{b.assets.min_memory >> 20}mib_guest": _idle_memory(b, b.assets.min_memory),
                "idle_128mib_guest": _idle_memory(b, 128 * MiB),
            }
        finally:
            for st in b.list():
                b.destroy(st.id)
            b.forget_node()
    if json_out:
        print(json.dumps(result))
    else:
        print(f"vm backend ({result['accel']}), n={n}")
        for name, value in result.items():
            print(f"  {name:<40} {value}")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    run(parser.parse_args())
