"""TAP devices for VM slivers: made here, persistent, opened by QEMU by name.

QEMU is started with ``-netdev tap,ifname=<name>,script=no,downscript=no``: it only attaches
to a device that already exists, so QEMU needs no helper script, no bridge helper and no
privileges of its own for the network, and the agent (not QEMU) owns the device's lifetime.
The device is single-queue (QEMU then attaches with one fd; a multi-queue device would refuse
that) and owned by root.

Shaping like a container's veth: a tbf on the TAP itself limits what the guest receives; what
the guest sends arrives as the TAP's *ingress*, which a qdisc cannot delay, so it is
redirected (u32 match-all + mirred) to an IFB device whose tbf shapes it. This kernel has no
``police`` action, and a policer would drop instead of queueing anyway.
"""

from __future__ import annotations

import fcntl
import os
import struct

from pyroute2 import IPRoute

TUNSETIFF = 0x400454CA
TUNSETPERSIST = 0x400454CB
TUNSETOWNER = 0x400454CC
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
ETH_P_ALL = 0x0003
INGRESS = 0xFFFF0000  # the ingress qdisc's handle, "ffff:"


def create_persistent_tap(name: str, owner: int = 0) -> None:
    """Create TAP ``name`` (single-queue, persistent, owned by uid ``owner``); it stays down."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), IFF_TAP | IFF_NO_PI))
        fcntl.ioctl(fd, TUNSETOWNER, owner)
        fcntl.ioctl(fd, TUNSETPERSIST, 1)
    finally:
        os.close(fd)


def redirect_ingress(ipr: IPRoute, index: int, to_index: int) -> None:
    """Send everything arriving on interface ``index`` out of ``to_index`` (an IFB) instead."""
    ipr.tc("add", "ingress", index, INGRESS)
    action = {"kind": "mirred", "direction": "egress", "action": "redirect", "ifindex": to_index}
    ipr.tc("add-filter", "u32", index, parent=INGRESS, prio=1, protocol=ETH_P_ALL, target=0x10001, keys=["0x0/0x0+0"], action=action)
