"""Helpers shared by the runc backend tests (a plain module: the test dirs are not packages)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

from node_agent import cgroups
from node_agent.backends.runc import RuncBackend
from slices.model import Resources, SliverSpec

PREFIX = f"smt{os.getpid() % 10000}"
MiB = 1 << 20


def run_in(backend: RuncBackend, sliver: str, script: str, timeout: float = 20.0) -> tuple[int, str, str]:
    """exec ``sh -c script`` in a sliver; (exit code, stdout, stderr)."""
    out, err, code = b"", b"", -1
    for kind, chunk in backend.exec(sliver, ["sh", "-c", script], timeout):
        if kind == "stdout":
            out += chunk
        elif kind == "stderr":
            err += chunk
        else:
            code = int(chunk)
    return code, out.decode(errors="replace"), err.decode(errors="replace")


def spec(sid: str, **kw: Any) -> SliverSpec:
    base: dict[str, Any] = {
        "id": sid, "slice": f"slice-{sid}", "isolation": "container", "image": "busybox",
        "cpu": 0.5, "memory": 64 * MiB, "disk": 64 * MiB,
    }  # fmt: skip
    base.update(kw)
    if base.get("command") is not None:
        base["command"] = tuple(base["command"])
    res = Resources(**{k: base.pop(k) or 0 for k in ("cpu", "memory", "disk", "bandwidth") if k in base})
    return SliverSpec(**base, resources=res)


def sweep(state_root: Path) -> None:
    """Remove by name whatever a crashed test may have left with this run's prefix."""
    runc_roots = list(state_root.glob("**/runc")) if state_root.exists() else []
    for root in runc_roots:
        with contextlib.suppress(Exception):
            out = subprocess.run(["runc", "--root", str(root), "list", "-q"], capture_output=True, text=True).stdout
            for cid in out.split():
                subprocess.run(["runc", "--root", str(root), "delete", "--force", cid], capture_output=True)
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                if str(state_root).encode() in (proc / "cmdline").read_bytes():
                    os.kill(int(proc.name), signal.SIGKILL)
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        points = [line.split()[4] for line in f if str(state_root) in line]
    for point in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)
    for ns in Path("/run/netns").glob(f"{PREFIX}-*") if Path("/run/netns").exists() else []:
        subprocess.run(["umount", "-l", str(ns)], capture_output=True)
        ns.unlink(missing_ok=True)
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    for line in links.splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        if name.startswith(PREFIX[:8] + "-"):
            subprocess.run(["ip", "link", "del", name], capture_output=True)
    cg = cgroups.Cgroups(PREFIX, "x")
    with contextlib.suppress(Exception):
        cg.remove(PREFIX)
