"""Helpers shared by the VM backend tests (a plain module: the test dirs are not packages)."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Any

from node_agent import cgroups
from node_agent.backends.qemu import launcher
from node_agent.backends.qemu.backend import QemuBackend
from node_agent.backends.qemu.settings import QemuSettings
from node_agent.machine_resources import MachineResources, sliver_key
from node_agent.netdev import tap_name
from slices.model import SliverSpec
from slices.waiting import wait_until
from tests.integration import realhost
from tests.integration.realhost import Execs, new_prefix, sliver_spec
from tests.integration.realhost import why_not as host_why_not

PREFIX = new_prefix("v")
MiB = 1 << 20
IMAGES = Path("/var/lib/slicemesh/images")  # where `make setup` put the kernel and the busybox base
BOOT_TIMEOUT = 120.0  # a TCG boot takes 4-6 s of CPU; on a shared 2-core host, several times that


def why_not() -> str | None:
    reason = host_why_not("mkfs.ext4/e2fsprogs")
    if reason:
        return reason
    if shutil.which(launcher.QEMU) is None:
        return "qemu-system-x86_64 is not installed (Debian package qemu-system-x86)"
    if not (IMAGES / "kernel" / "current").exists():
        return f"no guest kernel under {IMAGES} (run `make setup`)"
    if not Path("/dev/net/tun").exists():
        return "no /dev/net/tun (TAP devices)"
    return None


def spec(sid: str, **kw: Any) -> SliverSpec:
    return sliver_spec(sid, {"isolation": "vm", "cpu": 1.0, "memory": 128 * MiB, "disk": 64 * MiB}, **kw)


def run_in(backend: Execs, sliver: str, script: str, timeout: float = 60.0) -> tuple[int, str, str]:
    """exec ``sh -c script`` in a sliver; a guest's commands get longer than a container's."""
    return realhost.run_in(backend, sliver, script, timeout)


def wait_state(backend: QemuBackend, sliver: str, state: str, timeout: float = BOOT_TIMEOUT) -> Any:
    return wait_until(lambda: (st := backend.status(sliver)).state == state and st, timeout, f"{sliver} to be {state}", max_delay=0.2)


def gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def leftovers(backend: QemuBackend, sliver: str, pids: list[int]) -> list[str]:
    """Everything of ``sliver`` that should be gone after destroy: processes, files, sockets,
    TAP, cgroup leaf, address."""
    found = [f"process {pid}" for pid in pids if not gone(pid)]
    key = sliver_key(sliver)
    if (backend.slivers_dir / key).exists():
        found.append(f"dir {backend.slivers_dir / key}")
    if backend._paths(sliver).run.exists():
        found.append(f"run dir {backend._paths(sliver).run}")
    tap = Path("/sys/class/net") / tap_name(backend.machine.prefix, backend.machine.node, key)
    if tap.exists():
        found.append(f"tap {tap.name}")
    found += [f"cgroup {d}" for d in (m / backend.cg.leaf(key) for m in cgroups.hierarchies()) if d.exists()]
    if backend.machine.addresses.get(sliver) is not None:
        found.append(f"address {backend.machine.addresses.get(sliver)}")
    return found


def make_machine(state: Path, node: str = "n1", **kw: Any) -> MachineResources:
    """The node-level resources of test node ``node`` (2 cores, 2 GiB), under ``state/node``."""
    opts: dict[str, Any] = {"prefix": PREFIX, "capacity_cpu": 2.0, "capacity_memory": 2 << 30, "images_dir": IMAGES}
    opts.update(kw)
    return MachineResources(state / "node", node, **opts)


def make(state: Path, machine: MachineResources | None = None, **kw: Any) -> QemuBackend:
    """A VM backend over ``state`` (TCG: no KVM probe), on ``machine`` or a new one of its own."""
    settings = QemuSettings(**{"accelerator": "tcg", **kw})
    return QemuBackend(machine or make_machine(state), state / "qemu", settings)


def clean(backends: list[Any], machines: list[MachineResources]) -> None:
    """Destroy every sliver, close the backends, release the machines (the last one: forget
    its bridge and node cgroup too)."""
    for b in reversed(backends):
        with contextlib.suppress(Exception):
            for st in b.list():
                b.destroy(st.id)
        with contextlib.suppress(Exception):
            b.close()
    for i, m in enumerate(machines):
        with contextlib.suppress(Exception):
            m.forget() if i == len(machines) - 1 else m.close()


def processes_mentioning(path: Path) -> list[int]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            if str(path).encode() in cmdline.read_bytes() and int(cmdline.parent.name) != os.getpid():
                found.append(int(cmdline.parent.name))
    return found
