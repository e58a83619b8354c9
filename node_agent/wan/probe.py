"""Which wide-area path this kernel offers: netem, the TUN delay daemon, or neither.

Both are tried for real, in a throwaway network namespace made by a short-lived thread (its
namespace goes away with its last socket), so the probe changes nothing on the host: a netem
qdisc on that namespace's loopback (the kernel loads ``sch_netem`` on demand if it exists) and
a TUN device there.
"""

from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass
from functools import lru_cache

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from node_agent.wan.tun import TunError, open_tun

CLONE_NEWNET = 0x40000000
LOOPBACK_INDEX = 1


@dataclass(frozen=True)
class Paths:
    netem: bool
    tun: bool
    netem_reason: str
    tun_reason: str

    def choose(self, mode: str) -> tuple[str, str]:
        """(path, why) for a requested mode: ``netem``, ``tun`` or ``off``; raises if it cannot be had."""
        if mode == "off":
            return "off", "turned off"
        if mode == "netem" and not self.netem:
            raise RuntimeError(f"the netem path was asked for but {self.netem_reason}")
        if mode == "tun" and not self.tun:
            raise RuntimeError(f"the TUN path was asked for but {self.tun_reason}")
        if mode in ("auto", "netem") and self.netem:
            return "netem", "the kernel has netem"
        if self.tun:
            return "tun", f"{self.netem_reason}; using the user-space delay daemon" if mode == "auto" else "asked for"
        raise RuntimeError(f"no wide-area path: {self.netem_reason}; {self.tun_reason}")


def _probe_in_fresh_netns() -> Paths:
    out: dict[str, Paths] = {}

    def body() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(CLONE_NEWNET) != 0:
            why = f"cannot make a network namespace to probe in (errno {ctypes.get_errno()})"
            out["paths"] = Paths(False, False, why, why)
            return
        netem, netem_reason = False, "netem works"
        try:
            with IPRoute() as ipr:
                ipr.tc("add", "netem", LOOPBACK_INDEX, "1:", delay=1000)
            netem = True
        except NetlinkError as exc:
            netem_reason = f"this kernel has no netem qdisc ({exc.args[1] if len(exc.args) > 1 else exc})"
        tun, tun_reason = False, "TUN works"
        try:
            open_tun("probe0").close()
            tun = True
        except TunError as exc:
            tun_reason = f"no TUN device: {exc}"
        out["paths"] = Paths(netem, tun, netem_reason, tun_reason)

    t = threading.Thread(target=body, name="wan-probe")
    t.start()
    t.join()
    return out["paths"]


@lru_cache(maxsize=1)
def detect() -> Paths:
    """What this kernel offers (probed once per process)."""
    return _probe_in_fresh_netns()
