"""User namespaces for container slivers: uid 0 inside is an unprivileged uid range outside.

Why: without one, root in a sliver is root on the host to the kernel, and any escape (a runc
bug such as CVE-2019-5736 or CVE-2024-21626, a leaked fd, a kernel bug) hands over the host.
With one, an escaped process is uid 1,0xx,xxx,xxx and owns nothing of the host's.

Ranges are per sliver, as Kubernetes does per pod, not per node as Docker's userns-remap
does: slivers of one node then cannot signal, trace or read each other's files even after an
escape. Node ``block`` owns host ids ``[block * 2**24, (block + 1) * 2**24)``; the sliver at
address ``10.a.b.h`` gets the 65536 ids from ``block * 2**24 + h * 2**16``, so the node's
address pool (unique per node, persisted, reused only after a destroy) is the id allocator too.

How, given runc 1.1.5 (measured here; the reasons are in docs/security.md):

* The sliver's network namespace must be *owned* by its user namespace: runc 1.1 joins the
  user namespace before the others, so ``runc exec`` into a netns owned by the initial user
  namespace fails ("failed to setns into net namespace: Operation not permitted", runc
  #4390, fixed in 1.2), and sysfs cannot be mounted for such a netns either. So both are
  made at once, ahead of need, by the node's spare pairs (vethpool.py): a child process
  unshares ``CLONE_NEWUSER | CLONE_NEWNET`` and waits (``PendingUserns``); the netns is
  pinned and gets its veth at once, and the id map is written when a sliver takes the pair
  (``finish``), since the range follows the sliver's address. runc joins both by path.
* The shared read-only image bases stay owned by host root; each sliver's overlay lower is an
  id-mapped mount of the base (``mapped_tree``, kernel >= 5.19), so files appear owned by
  root inside without a per-range copy. It is a detached mount that only the overlay holds.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import os
import select
import shutil
import struct
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from node_agent.netns import pin
from slices.errors import SliceMeshError

SLIVER_IDS = 1 << 16
NODE_IDS = 1 << 24
DEFAULT_BLOCK = 64
MAX_BLOCK = 127  # stay below 2**31: some tools still print larger ids as negative
USERNS_DIR = Path("/run/slicemesh/userns")

MNT_DETACH = 2
AT_FDCWD, AT_EMPTY_PATH = -100, 0x1000
OPEN_TREE_CLONE, OPEN_TREE_CLOEXEC = 1, 0o2000000
MOVE_MOUNT_F_EMPTY_PATH = 4
MOUNT_ATTR_RDONLY, MOUNT_ATTR_IDMAP = 0x1, 0x00100000
SYS_OPEN_TREE, SYS_MOVE_MOUNT, SYS_MOUNT_SETATTR = 428, 429, 442  # same on x86_64 and aarch64

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class UsernsError(SliceMeshError):
    """A sliver's user namespace or id-mapped view cannot be made (at start-up, or wrapped in a
    backend error at create)."""


@dataclass(frozen=True)
class IdMap:
    """A sliver's user namespace (pinned at ``path``) and the first host id of its range."""

    path: Path
    host_id: int


def check_block(block: int) -> None:
    if not 1 <= block <= MAX_BLOCK:
        raise UsernsError(f"uid block {block} is outside 1..{MAX_BLOCK}")


def sliver_host_id(block: int, subnet: str, address: str) -> int:
    """The first host uid/gid of the sliver at ``address`` in node block ``block``."""
    check_block(block)
    net = ipaddress.ip_network(subnet)
    slot = int(ipaddress.ip_address(address)) - int(net.network_address)
    if not 0 < slot < NODE_IDS // SLIVER_IDS:
        raise UsernsError(f"{address} is not one of the first 255 addresses of {subnet}: no uid range for it")
    return block * NODE_IDS + slot * SLIVER_IDS


def id_mappings(host_id: int) -> list[dict[str, int]]:
    """The OCI ``uidMappings``/``gidMappings`` value for a sliver's range."""
    return [{"containerID": 0, "hostID": host_id, "size": SLIVER_IDS}]


def _check(ret: int, what: str) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return ret


_released: list[subprocess.Popen[bytes]] = []  # children told to exit, not yet reaped
_released_lock = threading.Lock()


def reap(block: bool = False) -> None:
    """Collect released children: without blocking on a sliver's path, blocking at shutdown."""
    with _released_lock:
        for proc in list(_released):
            if (proc.wait(timeout=10) if block else proc.poll()) is not None:
                _released.remove(proc)


class PendingUserns:
    """A small process in a fresh user + network namespace pair, waiting for its id map.

    ``unshare --user --net cat``: made with one ``unshare`` system call, so the netns is owned
    by the user namespace; ``cat`` then echoes one byte to say it is there, and holds the pair
    until its input closes: ``finish`` writes the map and closes it, and so does the agent's
    death, so none outlives the agent. A spawned program rather than a fork of the agent: a
    fork's exit unmaps a copy of the agent's memory, CPU that a start-up would compete with
    (measured: the netlink set-up after ``finish`` took 2.2 ms instead of 0.9 on a loaded host).
    """

    def __init__(self, timeout: float = 10.0) -> None:
        reap()
        if shutil.which("unshare") is None:
            raise UsernsError("unshare is not installed (Debian package util-linux)")
        proc = subprocess.Popen(["unshare", "--user", "--net", "cat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={})
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        self._proc = proc
        try:
            os.write(proc.stdin.fileno(), b"\n")
            ready = select.select([proc.stdout], [], [], timeout)[0] and os.read(proc.stdout.fileno(), 1) == b"\n"
        except OSError:
            ready = False
        proc.stdout.close()
        if not ready:
            self.abandon()
            why = proc.stderr.read().decode(errors="replace").strip() or f"no answer within {timeout:g} s"
            proc.stderr.close()
            raise UsernsError(f"cannot create a user namespace: {why[:300]} (set sliver_userns: false where they are not allowed)")
        proc.stderr.close()
        self.pid = proc.pid

    @property
    def netns_file(self) -> str:
        return f"/proc/{self.pid}/ns/net"

    def finish(self, host_id: int, path: Path) -> IdMap:
        """Map the namespace's ids 0..65535 to ``host_id``.., pin it at ``path``, release the child."""
        try:
            line = f"0 {host_id} {SLIVER_IDS}\n"
            for name in ("uid_map", "gid_map"):
                with open(f"/proc/{self.pid}/{name}", "w", encoding="ascii") as f:
                    f.write(line)
            pin(f"/proc/{self.pid}/ns/user", path)
        finally:
            self.abandon(wait=False)  # reaped later: nothing on a sliver's path waits for it
        return IdMap(path, host_id)

    def abandon(self, wait: bool = True) -> None:
        """Let the child exit (idempotent); a namespace nobody pinned goes with it."""
        stdin = self._proc.stdin
        if stdin is None or stdin.closed:
            return
        stdin.close()
        with _released_lock:
            _released.append(self._proc)
        reap(block=wait)


@contextlib.contextmanager
def mapped_tree(src: Path, idmap: IdMap) -> Iterator[int]:
    """A detached read-only view of ``src`` (an fd) whose host-root files are root in ``idmap``'s
    namespace; closed on exit.

    Meant as an overlay's lower layer: overlayfs keeps its own private clone of each layer,
    so the view is needed only while the overlay is mounted. Since Linux 6.15 overlayfs takes
    a detached tree as a layer (``/proc/self/fd/N``), so it is never attached anywhere; older
    kernels need ``attached`` (vdisk.py tries the first, then the second).
    """
    tree = _check(_libc.syscall(SYS_OPEN_TREE, AT_FDCWD, str(src).encode(), OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC), f"open_tree {src}")
    try:
        userns_fd = os.open(idmap.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            attr = ctypes.create_string_buffer(struct.pack("=QQQQ", MOUNT_ATTR_IDMAP | MOUNT_ATTR_RDONLY, 0, 0, userns_fd))
            try:
                _check(_libc.syscall(SYS_MOUNT_SETATTR, tree, b"", AT_EMPTY_PATH, attr, len(attr) - 1), f"id-mapped mount of {src}")
            except OSError as exc:
                raise UsernsError(
                    f"{exc.strerror}: the images dir cannot be id-mapped (kernel >= 5.19 and ext4/xfs/btrfs/tmpfs needed; or set sliver_userns: false)"
                ) from None
        finally:
            os.close(userns_fd)
        yield tree
    finally:
        os.close(tree)


@contextlib.contextmanager
def attached(tree: int, dst: Path) -> Iterator[Path]:
    """The detached ``tree`` mounted at ``dst`` for the duration (kernels before 6.15)."""
    dst.mkdir(exist_ok=True)
    try:
        _check(_libc.syscall(SYS_MOVE_MOUNT, tree, b"", AT_FDCWD, str(dst).encode(), MOVE_MOUNT_F_EMPTY_PATH), f"move_mount to {dst}")
        yield dst
    finally:
        if _libc.umount2(str(dst).encode(), 0) != 0:
            _libc.umount2(str(dst).encode(), MNT_DETACH)
        with contextlib.suppress(OSError):
            dst.rmdir()
