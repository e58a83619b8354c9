"""Per-VM console logger: copies the guest's serial console into a size-capped, rotated log.

Why a process of its own: QEMU's file backend cannot rotate or cap a log, and the VM outlives
the agent, so whatever keeps the log must too. QEMU serves the serial console on a unix
socket and waits (``wait=on``) until this process has connected, so not a byte of the boot
is lost; this process then copies until QEMU closes the socket, with the copy loop a
container's supervisor uses (node_agent/sliverlog.py: ``<log>`` and one ``<log>.1``, read back
by ``sliverlog.read_log``). If it is killed, the backend starts a new one, which QEMU accepts
as the next client.

Run as ``python -I -S consolelog.py SOCKET LOG MAX_BYTES`` (no site import: ~10 ms).
"""

from __future__ import annotations

import os
import socket
import sys
import time


def connect(path: str, timeout: float) -> socket.socket:
    """Connect, retrying while QEMU has not created its socket yet."""
    deadline = time.monotonic() + timeout
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
            return sock
        except OSError:
            sock.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.005)


def main(argv: list[str]) -> int:
    sock_path, log_path, max_bytes = argv
    # The project root, for the copy loop a container's supervisor uses (-I leaves it off sys.path).
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
    from node_agent.sliverlog import copy_rotating

    sock = connect(sock_path, 30.0)
    os.close(0)
    copy_rotating(sock.fileno(), log_path, int(max_bytes))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
