"""The runc backend's start-up self-check: can this host really run a container sliver?

An agent that offers containers it cannot run accepts slivers that all fail; one that checks
first offers only what works and says why not (``slicemesh nodes`` shows the reason). The
check is what a sliver needs, in the order it needs it: the cgroup controllers mounted, the
runtime binary, then a probe container (busybox ``true`` in fresh namespaces, in a leaf of
the node's cgroup, removed after) run by that runtime.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

from node_agent import cgroups
from node_agent.backends.runc import rootfs

PROBE_TIMEOUT = 20.0
NEEDED_V1 = ("cpu", "memory", "pids")


def cgroup_problem() -> str | None:
    """Why the cgroup controllers a sliver is limited by are not usable here, or None."""
    if cgroups.version() == 2:
        controllers = (cgroups.ROOT / "cgroup.controllers").read_text().split() if (cgroups.ROOT / "cgroup.controllers").exists() else []
        missing = [c for c in NEEDED_V1 if c not in controllers]
    else:
        mounted = cgroups.v1_mounts()
        missing = [c for c in NEEDED_V1 if c not in mounted or not mounted[c].is_dir()]
    return f"cgroup controllers not mounted: {', '.join(missing)}" if missing else None


def probe_config(lower: Path, cgroup: str) -> dict[str, object]:
    """The smallest OCI config that exercises what a sliver uses: namespaces and a cgroup."""
    return {
        "ociVersion": "1.0.2",
        "process": {"user": {"uid": 0, "gid": 0}, "args": ["/bin/true"], "cwd": "/", "env": ["PATH=/bin:/usr/bin"], "noNewPrivileges": True},
        "root": {"path": str(lower), "readonly": True},
        "hostname": "probe",
        # /dev on a tmpfs of its own, as a sliver's: without it runc makes /dev/ptmx and the
        # device nodes in the shared image, and two agents probing at once collide there
        # ("error setting up ptmx: symlink pts/ptmx ...: file exists").
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=1m"]},
        ],
        "linux": {
            "cgroupsPath": cgroup,
            "resources": {"pids": {"limit": 16}, "memory": {"limit": 64 << 20}},
            "namespaces": [{"type": t} for t in ("pid", "mount", "ipc", "uts", "network")],
        },
    }


def problem(runtime: str, images_dir: Path, cgroup: str) -> str | None:
    """Why this host cannot run container slivers through ``runtime``, or None when it can."""
    if (why := cgroup_problem()) is not None:
        return why
    binary = shutil.which(runtime)
    if binary is None:
        return f"the OCI runtime {runtime!r} is not an executable here"
    try:
        lower = rootfs.prepare("busybox", images_dir).lower
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        return f"no busybox image to probe with: {exc}"
    cid = cgroup.rsplit("/", 1)[-1]
    with tempfile.TemporaryDirectory(prefix="slicemesh-probe-") as tmp:
        bundle, root = Path(tmp) / "bundle", Path(tmp) / "root"
        bundle.mkdir()
        (bundle / "config.json").write_text(json.dumps(probe_config(lower, cgroup)))
        cmd = [binary, "--root", str(root), "run", "--bundle", str(bundle), cid]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PROBE_TIMEOUT, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"{runtime} could not run a probe container: {exc}"
        finally:
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                subprocess.run([binary, "--root", str(root), "delete", "--force", cid], capture_output=True, timeout=PROBE_TIMEOUT)
        if proc.returncode != 0:
            said = (proc.stderr or proc.stdout).strip().splitlines()
            return f"{runtime} could not run a probe container (exit {proc.returncode}): {said[-1][:200] if said else 'no output'}"
    return None
