"""What tests on real host facilities share: a per-run name prefix, whether they can run, a sweep,
and the two things every sliver test does: make a spec, run a command in a sliver.

Everything such a test makes carries its run's prefix, so parallel runs (other helpers on the
same machine) cannot collide and the session sweep can remove leftovers by name after a
crash. Interface names have room for only five characters of the prefix (IFNAMSIZ), so those
five are random, not derived from the pid.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import shutil
import signal
import string
import subprocess
from pathlib import Path
from typing import Any, Protocol

from node_agent import cgroups, firewall
from node_agent.backends.base import collected
from node_agent.backends.runc.rootfs import ROOTS_DIR
from node_agent.netns import NETNS_DIR
from node_agent.userns import USERNS_DIR
from slices.model import Resources, SliverSpec


def new_prefix(tag: str) -> str:
    """``s`` + four random characters + ``tag``: unique among concurrent runs in its first five."""
    rng = random.SystemRandom()
    return "s" + "".join(rng.choice(string.ascii_lowercase + string.digits) for _ in range(4)) + tag


def why_not(*tools: str) -> str | None:
    """Why real-host tests cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "needs root (cgroups, mounts, netns)"
    for tool, package in (t.split("/") for t in tools):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian package {package})"
    if not Path("/dev/loop-control").exists():
        return "no loop devices"
    return None


def sweep(state_root: Path, prefix: str) -> None:
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
    for pins in (NETNS_DIR, USERNS_DIR, ROOTS_DIR):  # named namespaces, rootfs mount points
        for path in pins.glob(f"{prefix}-*") if pins.exists() else []:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)
            path.rmdir() if path.is_dir() else path.unlink(missing_ok=True)
    # bridges of this run's nodes, also of prefixes derived from it (PREFIX + "c"); veths, TAPs, IFBs
    ours = re.compile(rf"^({re.escape(prefix[:5])}[a-z0-9]{{0,3}}-[0-9a-f]+|{re.escape(prefix[:5])}[0-9a-f]{{9}})$")
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    for line in links.splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        if ours.match(name):
            subprocess.run(["ip", "link", "del", name], capture_output=True)
    with contextlib.suppress(Exception):
        for table in firewall.tables(prefix[:5]):
            if ours.match(table):
                firewall.remove(table)
    cg = cgroups.Cgroups(prefix, "x")
    with contextlib.suppress(Exception):
        cg.remove(prefix)


def sliver_spec(sid: str, defaults: dict[str, Any], **kw: Any) -> SliverSpec:
    """A sliver spec from ``defaults`` updated by ``kw``; cpu/memory/disk/bandwidth go into its
    resource vector, a ``command`` list becomes a tuple."""
    base = {"id": sid, "slice": f"slice-{sid}", "image": "busybox", **defaults, **kw}
    if base.get("command") is not None:
        base["command"] = tuple(base["command"])
    res = Resources(**{k: base.pop(k) or 0 for k in ("cpu", "memory", "disk", "bandwidth") if k in base})
    return SliverSpec(**base, resources=res)


class Execs(Protocol):
    def exec(self, sliver_id: str, argv: list[str], timeout: float) -> Any: ...


def exec_in(backend: Execs, sliver: str, argv: list[str], timeout: float) -> tuple[int, str, str]:
    """exec ``argv`` in a sliver, a container's or a VM's; (exit code, stdout, stderr)."""
    code, out, err = collected(backend.exec(sliver, argv, timeout))
    return code, out.decode(errors="replace"), err.decode(errors="replace")


def run_in(backend: Execs, sliver: str, script: str, timeout: float = 20.0) -> tuple[int, str, str]:
    """exec ``sh -c script`` in a sliver, a container's or a VM's; (exit code, stdout, stderr)."""
    return exec_in(backend, sliver, ["sh", "-c", script], timeout)
