"""What a container sliver's rootfs is made of: an image base as the overlay's lower layer,
plus, for the ``host`` image, the host's own directories bind-mounted read-only; and where
the overlay is mounted when the sliver has a user namespace.

The bases themselves are node-level (``node_agent/images.py``: a VM's guest is made from the
same busybox tree); only the overlay and the OCI bind mounts are a container's business.

Where: runc mounts the rootfs from inside the sliver's user namespace, as an unprivileged
host uid, so every directory above it must let "others" through, and state dirs (pytest's,
mkdtemp's, an operator's) may be 0700. Such a sliver's overlay is therefore mounted at
``/run/slicemesh/roots/<netns name>.<128 random bits>``: the parent lets anyone through but
lists nothing to anyone but root, so a process that escaped one sliver cannot name
another's root. Without a user namespace it stays at ``<bundle>/rootfs``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path

from node_agent.images import DEFAULT_DIR, HOST_ETC, HOST_TOP, ImageError, build_busybox, build_host, static_busybox
from node_agent.vdisk import umount

ROOTS_DIR = Path("/run/slicemesh/roots")


@dataclass(frozen=True)
class Image:
    """What a sliver's rootfs is made of: the overlay's lower dir and read-only host binds."""

    name: str
    lower: Path
    ro_binds: tuple[tuple[str, str], ...] = ()


def _host_binds() -> tuple[tuple[str, str], ...]:
    binds = [("/usr", "/usr")]
    binds += [(f"/{n}", f"/{n}") for n in HOST_TOP if Path(f"/{n}").is_dir() and not Path(f"/{n}").is_symlink()]
    binds += [(f"/etc/{n}", f"/etc/{n}") for n in HOST_ETC if Path(f"/etc/{n}").exists()]
    return tuple(binds)


def available(images_dir: Path = DEFAULT_DIR) -> list[str]:
    """Images this node can offer now: busybox if its base exists or can be built; host on Linux."""
    names = []
    if (images_dir / "busybox/bin/busybox").is_file() or static_busybox() is not None:
        names.append("busybox")
    if sys.platform == "linux":
        names.append("host")
    return names


def prepare(name: str, images_dir: Path = DEFAULT_DIR) -> Image:
    """The base for ``name``, building it on first use."""
    if name == "busybox":
        return Image(name, build_busybox(images_dir))
    if name == "host":
        return Image(name, build_host(images_dir), _host_binds())
    raise ImageError(f"unknown image {name!r} (this node offers {', '.join(available(images_dir))})")


def make_roots_dir() -> None:
    ROOTS_DIR.mkdir(parents=True, exist_ok=True)
    os.chmod(ROOTS_DIR, 0o711)


def new_root(stem: str) -> str:
    """A fresh mount point name for a sliver's rootfs that its user namespace's root can reach."""
    return str(ROOTS_DIR / f"{stem}.{secrets.token_hex(16)}")


def sweep_roots(stem: str, keep: set[str]) -> None:
    """Unmount and remove the mount points of ``stem`` (a node's) that no sliver of ours names:
    what an agent killed halfway through a start-up left."""
    for path in ROOTS_DIR.glob(f"{stem}*.*") if ROOTS_DIR.is_dir() else []:
        if str(path) not in keep:
            with contextlib.suppress(OSError):
                umount(path)
                path.rmdir()


def write_files(root: Path, files: dict[str, str], owner: int) -> None:
    """Write ``files`` (``dir/name`` relative to ``root``) into a mounted sliver root, each
    replaced by a rename so a reader inside sees the old file or the new, owned by the
    sliver's root (``owner``: its first host uid) so that it may edit them. The directory is
    opened without following a symlink and the file written relative to it, so a sliver that
    made its /etc a link to somewhere on the host cannot make the agent write there."""
    for rel, text in files.items():
        parent, _, name = rel.rpartition("/")
        try:
            dfd = os.open(root / parent, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError:
            continue  # the sliver made its /etc something else: leave it alone
        try:
            tmp = f".{name}.slicemesh"
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=dfd)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644, dir_fd=dfd)
            try:
                os.write(fd, text.encode())
                os.fchown(fd, owner, owner)
            finally:
                os.close(fd)
            os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        finally:
            os.close(dfd)
