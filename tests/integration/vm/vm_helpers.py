"""Helpers shared by the VM backend tests (a plain module: the test dirs are not packages)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

from node_agent import cgroups
from node_agent.backends.qemu import QemuBackend, launcher
from node_agent.netdev import bridge_name
from slices.model import SliverSpec
from slices.waiting import wait_until

PREFIX = f"smv{os.getpid() % 10000}"
MiB = 1 << 20
IMAGES = Path("/var/lib/slicemesh/images")  # where `make setup` put the kernel and the busybox base
BOOT_TIMEOUT = 120.0  # a TCG boot takes 4-6 s of CPU; on a shared 2-core host, several times that


def why_not() -> str | None:
    if os.geteuid() != 0:
        return "needs root (cgroups, TAP devices, bridges)"
    if shutil.which(launcher.QEMU) is None:
        return "qemu-system-x86_64 is not installed (Debian package qemu-system-x86)"
    if not (IMAGES / "kernel" / "current").exists():
        return f"no guest kernel under {IMAGES} (run `make setup`)"
    if not Path("/dev/net/tun").exists():
        return "no /dev/net/tun (TAP devices)"
    return None


def spec(sid: str, **kw: Any) -> SliverSpec:
    base: dict[str, Any] = {
        "id": sid, "slice": f"slice-{sid}", "isolation": "vm", "image": "busybox",
        "cpu": 1.0, "memory": 128 * MiB, "disk": 64 * MiB,
    }  # fmt: skip
    base.update(kw)
    if base.get("command") is not None:
        base["command"] = tuple(base["command"])
    return SliverSpec(**base)


def run_in(backend: QemuBackend, sliver: str, script: str, timeout: float = 60.0) -> tuple[int, str, str]:
    """exec ``sh -c script`` in a VM; (exit code, stdout, stderr)."""
    out, err, code = b"", b"", -1
    for kind, chunk in backend.exec(sliver, ["sh", "-c", script], timeout):
        if kind == "stdout":
            out += chunk
        elif kind == "stderr":
            err += chunk
        else:
            code = int(chunk)
    return code, out.decode(errors="replace"), err.decode(errors="replace")


def wait_state(backend: QemuBackend, sliver: str, state: str, timeout: float = BOOT_TIMEOUT) -> Any:
    return wait_until(lambda: (st := backend.status(sliver)).state == state and st, timeout, f"{sliver} to be {state}", max_delay=0.2)


def gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def leftovers(backend: QemuBackend, sliver: str, pids: list[int]) -> list[str]:
    """Everything of ``sliver`` that should be gone after destroy."""
    found = [f"process {pid}" for pid in pids if not gone(pid)]
    key = sliver
    if (backend.slivers_dir / key).exists():
        found.append(f"dir {backend.slivers_dir / key}")
    for path in (backend._paths(sliver).run,):
        if path.exists():
            found.append(f"run dir {path}")
    tap = Path("/sys/class/net") / backend._metas.get(sliver, {}).get("tap", f"{PREFIX[:5]}t-none")
    if tap.exists():
        found.append(f"tap {tap.name}")
    found += [f"cgroup {d}" for d in (m / backend.cg.leaf(key) for m in cgroups.hierarchies()) if d.exists()]
    return found


def make(state: Path, **kw: Any) -> QemuBackend:
    opts: dict[str, Any] = {"prefix": PREFIX, "capacity_cpu": 2.0, "capacity_memory": 4 << 30, "images_dir": IMAGES, "accel": "tcg"}
    opts.update(kw)
    return QemuBackend(state, "n1", **opts)


def clean(backends: list[QemuBackend]) -> None:
    for b in reversed(backends):
        with contextlib.suppress(Exception):
            for st in b.list():
                b.destroy(st.id)
        with contextlib.suppress(Exception):
            b.close()


def sweep(state_root: Path) -> None:
    """Remove by name whatever a crashed test may have left under ``state_root`` and this run's prefix."""
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                if str(state_root).encode() in (proc / "cmdline").read_bytes():  # QEMU and its console logger
                    os.kill(int(proc.name), signal.SIGKILL)
    names = {bridge_name(PREFIX, "n1")}
    for meta in state_root.glob("**/slivers/*/meta.json"):
        with contextlib.suppress(OSError, ValueError, KeyError):
            names.add(json.loads(meta.read_text())["tap"])
    for name in names:
        subprocess.run(["ip", "link", "del", name], capture_output=True)
    with contextlib.suppress(Exception):
        cgroups.Cgroups(PREFIX, "x").remove(PREFIX)
