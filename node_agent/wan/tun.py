"""A TUN device, opened the way the delay daemon wants it.

With ``IFF_VNET_HDR`` and TSO/checksum offloads the kernel hands over whole TCP
segmentation-offload packets (up to 64 KiB) with a 10-byte virtio-net header in front, and
takes them back the same way: one read and one write per ~40 MSS-sized segments instead of one
each, which is what lets a Python loop carry hundreds of Mbit/s. The daemon never changes a
packet, so the header passes through untouched. If the offloads are refused the device is
opened again without them.

The device is not persistent: it disappears, with every route through it, when the fd closes,
so a daemon that is killed leaves no TUN behind.
"""

from __future__ import annotations

import fcntl
import os
import struct
from dataclasses import dataclass

TUNSETIFF = 0x400454CA
TUNSETOFFLOAD = 0x400454D0
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, TUN_F_TSO_ECN = 0x01, 0x02, 0x04, 0x08
VNET_HDR_LEN = 10  # struct virtio_net_hdr, the default size
#: The largest packet a read can return: a 64 KiB GSO packet plus its header.
READ_SIZE = 65535 + VNET_HDR_LEN + 64


class TunError(Exception):
    pass


@dataclass
class Tun:
    fd: int
    name: str
    offset: int  # bytes of header in front of each IPv4 packet

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def open_tun(name: str, *, offload: bool = True) -> Tun:
    """Create TUN device ``name`` in this thread's network namespace; non-blocking fd."""
    if not name or len(name) > 15:
        raise TunError(f"TUN name {name!r} must be 1 to 15 characters")
    try:
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise TunError(f"/dev/net/tun: {exc.strerror}") from None
    flags = IFF_TUN | IFF_NO_PI | (IFF_VNET_HDR if offload else 0)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), flags))
        if offload:
            fcntl.ioctl(fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN)
    except OSError as exc:
        os.close(fd)
        if offload and exc.errno == 22:  # EINVAL: offloads refused; plain packets still work
            return open_tun(name, offload=False)
        raise TunError(f"TUN {name}: {exc.strerror} (is another simulation using this prefix?)") from None
    return Tun(fd, name, VNET_HDR_LEN if offload else 0)
