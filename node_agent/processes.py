"""Waiting for a sliver's host processes to be gone (a container's init, a VM's QEMU).

"Gone" includes a zombie: a process re-parented to a supervisor that has not reaped it yet
holds nothing any more (its memory, cgroup charge and sockets are released at exit).
"""

from __future__ import annotations

import contextlib
import os
import time


def wait_gone(pid: int, timeout: float) -> bool:
    """True once ``pid`` has exited (or is a zombie), False if it still runs at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        with contextlib.suppress(OSError), open(f"/proc/{pid}/stat", encoding="ascii") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                return True
        time.sleep(0.01)
    return False
