"""A throwaway root for installer tests: this machine's own filesystem, with every directory an
installer writes behind an overlay, inside a private mount namespace.

The installer then runs as an operator would run it (as root, real paths, real Python, real
dpkg) while everything it writes lands in the overlays' upper directories under the test's tmp
dir. A process (``sleep``) holds the namespace; when it and the processes started in it end, the
kernel drops the namespace and its mounts, so a crashed test leaks nothing. The test sees the
sandbox's files through ``/proc/<holder>/root``, which resolves paths in the holder's mounts.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from slices.waiting import wait_until

# What deploy/install.sh writes: program, entry point, config and units, state. /run/systemd and
# the system bus are hidden too, so nothing in the sandbox reaches this host's systemd where it runs.
OVERLAID = ("/opt", "/etc", "/var/lib", "/usr/local")
HIDDEN = ("/run/systemd", "/run/dbus")
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class Sandbox:
    def __init__(self, work: Path, *, lifetime: float = 900.0) -> None:
        self.work = work
        self.children: list[subprocess.Popen[Any]] = []
        # unshare execs sleep in the new namespace: the pid we hold is in it (once unshare ran).
        self.holder = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sleep", str(lifetime)])
        try:
            own = os.readlink("/proc/self/ns/mnt")
            wait_until(lambda: os.readlink(f"/proc/{self.holder.pid}/ns/mnt") != own, 10, "the sandbox's mount namespace", max_delay=0.02)
            for d in OVERLAID:
                up = work / "upper" / d.strip("/").replace("/", "_")
                (up / "u").mkdir(parents=True)
                (up / "w").mkdir()
                self.must(["mount", "-t", "overlay", "overlay", "-o", f"lowerdir={d},upperdir={up / 'u'},workdir={up / 'w'}", d])
            for d in HIDDEN:
                if Path(d).is_dir():
                    self.must(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", d])
        except BaseException:
            self.close()
            raise

    @property
    def root(self) -> Path:
        """The sandbox's / as seen from outside it."""
        return Path(f"/proc/{self.holder.pid}/root")

    def path(self, p: str) -> Path:
        return self.root / p.lstrip("/")

    def argv(self, args: list[str]) -> list[str]:
        return ["nsenter", "--target", str(self.holder.pid), "--mount", "--", *args]

    def run(self, args: list[str], *, env: dict[str, str], timeout: float = 60.0, stdin: Any = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(args), env=env, cwd="/", capture_output=True, text=True, timeout=timeout, stdin=stdin)

    def must(self, args: list[str]) -> None:
        r = subprocess.run(self.argv(args), capture_output=True, text=True, timeout=30)
        if r.returncode:
            raise RuntimeError(f"{' '.join(args)}: {r.stderr.strip()}")

    def start(self, args: list[str], *, env: dict[str, str], log: Path) -> subprocess.Popen[Any]:
        """A long-running process inside the sandbox (stopped by ``stop`` or ``close``)."""
        with open(log, "wb") as f:
            p = subprocess.Popen(self.argv(args), env=env, cwd="/", stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.children.append(p)
        return p

    @staticmethod
    def stop(p: subprocess.Popen[Any]) -> None:
        p.terminate()
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=5)

    def close(self) -> None:
        for p in self.children:
            if p.poll() is None:
                self.stop(p)
        self.holder.kill()
        self.holder.wait(timeout=10)
