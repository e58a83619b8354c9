"""What tests on real host facilities share: a per-run name prefix, whether they can run, a sweep.

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

from node_agent import cgroups, firewall
from node_agent.backends.runc.rootfs import ROOTS_DIR
from node_agent.netns import NETNS_DIR
from node_agent.userns import USERNS_DIR


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
    ours = re.compile(rf"^({re.escape(prefix[:8])}-[0-9a-f]+|{re.escape(prefix[:5])}[0-9a-f]{{9}})$")  # bridges; veths, TAPs, IFBs
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    for line in links.splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        if ours.match(name):
            subprocess.run(["ip", "link", "del", name], capture_output=True)
    with contextlib.suppress(Exception):
        for table in firewall.tables(prefix[:8] + "-"):
            if ours.match(table):
                firewall.remove(table)
    cg = cgroups.Cgroups(prefix, "x")
    with contextlib.suppress(Exception):
        cg.remove(prefix)
