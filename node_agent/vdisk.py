"""Per-sliver virtual disk: a sparse ext4 image, loop-mounted, holding the overlay's upper layer.

Why a file system per sliver rather than a directory: its size *is* the disk quota, so filling
it gives ENOSPC to that sliver only, the host's file system never fills, and removing a sliver
is unmounting and unlinking one file. The rootfs is an overlay of the image's shared read-only
base (lower) and ``upper/`` on this disk.

Speed: mkfs runs once per disk size into a template; each sliver gets a sparse copy (only the
few MiB of metadata are written). Loop set-up (``LOOP_CONFIGURE`` with autoclear) and the mounts
are direct system calls, not ``losetup``/``mount`` processes. Autoclear means the loop device
detaches itself on the last unmount, so there is no device to leak once the disk is unmounted.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import glob
import os
import struct
import subprocess
import threading
import time
from pathlib import Path

from node_agent.userns import IdMap, attached, mapped_tree

LOOP_CTL_GET_FREE = 0x4C82
LOOP_CONFIGURE = 0x4C0A
LO_FLAGS_AUTOCLEAR = 4
MNT_DETACH = 2
DEFAULT_SIZE = 1 << 30
_libc = ctypes.CDLL(None, use_errno=True)


class DiskError(Exception):
    pass


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def mount(source: str, target: Path, fstype: str, data: str = "", flags: int = 0) -> None:
    _check(_libc.mount(source.encode(), str(target).encode(), fstype.encode(), flags, data.encode()), f"mount {target}")


def umount(target: Path, timeout: float = 2.0) -> None:
    """Unmount ``target`` if mounted; lazily as a last resort when it stays busy (the file
    system then lives until its last user goes: ``VDisks.mount_disk`` will not mount its
    image again before that)."""
    deadline = time.monotonic() + timeout
    while os.path.ismount(target):
        if _libc.umount2(str(target).encode(), 0) == 0:
            return
        err = ctypes.get_errno()
        if err in (errno.EINVAL, errno.ENOENT):
            return
        if err != errno.EBUSY or time.monotonic() > deadline:
            _check(_libc.umount2(str(target).encode(), MNT_DETACH), f"umount {target}")
            return
        time.sleep(0.01)


def umount_strict(target: Path, timeout: float) -> bool:
    """Unmount ``target`` for real (never lazily): whether it is unmounted within ``timeout``.
    A lazy unmount leaves the file system live until its last user goes: a disk image copied
    meanwhile may miss what it still holds (a cold move must not send it)."""
    deadline = time.monotonic() + timeout
    while os.path.ismount(target):
        if _libc.umount2(str(target).encode(), 0) == 0:
            return True
        err = ctypes.get_errno()
        if err in (errno.EINVAL, errno.ENOENT):
            return True
        if err != errno.EBUSY or time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def loops_backing(image: Path) -> list[str]:
    """Loop devices attached to ``image`` now (``/sys/block/loopN/loop/backing_file``)."""
    target = str(image.resolve())
    held = []
    for f in glob.glob("/sys/block/loop*/loop/backing_file"):
        try:
            if Path(f).read_text().rstrip("\n") == target:
                held.append(f"/dev/{f.split('/')[3]}")
        except OSError:
            continue  # detached while we looked
    return sorted(held)


def sparse_copy(src: Path, dst: Path) -> None:
    """Copy only the data extents of ``src`` (what ``cp --sparse=always`` does, in-process)."""
    size = src.stat().st_size
    fin = os.open(src, os.O_RDONLY)
    fout = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.ftruncate(fout, size)
        pos = 0
        while pos < size:
            try:
                start = os.lseek(fin, pos, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # only a hole remains
                    break
                raise
            end = os.lseek(fin, start, os.SEEK_HOLE)
            off_in, off_out = start, start
            while off_in < end:
                n = os.copy_file_range(fin, fout, end - off_in, off_in, off_out)
                if n == 0:
                    break
                off_in += n
                off_out += n
            pos = end
    finally:
        os.close(fin)
        os.close(fout)


def _loop_attach(image: Path) -> tuple[str, int]:
    """Bind ``image`` to a free loop device with autoclear; returns its /dev path and an open fd.

    The fd must stay open until the device is mounted: autoclear fires on the last close.
    """
    ctl = os.open("/dev/loop-control", os.O_RDWR | os.O_CLOEXEC)
    backing = os.open(image, os.O_RDWR | os.O_CLOEXEC)
    try:
        for _ in range(32):
            num = fcntl.ioctl(ctl, LOOP_CTL_GET_FREE)
            dev = f"/dev/loop{num}"
            try:
                fd = os.open(dev, os.O_RDWR | os.O_CLOEXEC)
            except FileNotFoundError:
                os.mknod(dev, 0o660 | 0o060000, os.makedev(7, num))
                fd = os.open(dev, os.O_RDWR | os.O_CLOEXEC)
            # struct loop_config { u32 fd; u32 block_size; struct loop_info64 info; u64 reserved[8]; }
            name = str(image).encode()[:63]
            info = struct.pack("=5Q4I64s64s32s2Q", 0, 0, 0, 0, 0, 0, 0, 0, LO_FLAGS_AUTOCLEAR, name, b"", b"", 0, 0)
            cfg = struct.pack("=II", backing, 0) + info + bytes(64)
            try:
                fcntl.ioctl(fd, LOOP_CONFIGURE, cfg)
            except OSError as exc:
                os.close(fd)
                if exc.errno != errno.EBUSY:  # EBUSY: taken by someone between GET_FREE and now
                    raise
                continue
            return dev, fd
        raise DiskError("no free loop device")
    finally:
        os.close(backing)
        os.close(ctl)


class VDisks:
    """Creates, mounts and removes sliver disks; formatted templates are cached per size."""

    def __init__(self, templates_dir: Path) -> None:
        self.templates_dir = templates_dir
        self._lock = threading.Lock()  # the warmer and a cold start-up may both want a template
        self.detached_layers = True  # overlayfs takes a detached id-mapped tree as a layer (Linux >= 6.15)

    def template(self, size: int) -> Path:
        path = self.templates_dir / f"ext4-{size}.img"
        with self._lock:
            return self._template(path, size)

    def _template(self, path: Path, size: int) -> Path:
        if not path.exists():
            self.templates_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            with open(tmp, "wb") as f:
                f.truncate(size)
            proc = subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", "-L", "sliver", str(tmp)], capture_output=True, text=True)
            if proc.returncode != 0:
                tmp.unlink(missing_ok=True)
                raise DiskError(f"mkfs.ext4 failed: {proc.stderr.strip()[:200]}")
            os.replace(tmp, path)
        return path

    def create(self, image: Path, size: int | None) -> None:
        """Make the disk image file (idempotent: an existing image keeps its data)."""
        if not image.exists():
            tmp = image.with_suffix(".tmp")
            sparse_copy(self.template(size or DEFAULT_SIZE), tmp)
            os.replace(tmp, image)

    def mount(self, image: Path, disk_dir: Path, lower: Path, rootfs: Path, idmap: IdMap | None = None) -> None:
        """Loop-mount the disk and the overlay rootfs on top of it (idempotent).

        ``idmap``: the sliver runs in that user namespace, so its layer belongs to the mapped
        root and the shared base is seen through an id-mapped mount (userns.py).
        """
        self.mount_disk(image, disk_dir)
        rootfs.mkdir(exist_ok=True)
        if os.path.ismount(rootfs):
            return
        if idmap is None:
            self._overlay(lower, disk_dir, rootfs)
            return
        os.chown(disk_dir / "upper", idmap.host_id, idmap.host_id)
        with mapped_tree(lower, idmap) as tree:
            if self.detached_layers:
                try:
                    self._overlay(f"/proc/self/fd/{tree}", disk_dir, rootfs)
                    return
                except OSError as exc:
                    if exc.errno != errno.EINVAL:
                        raise
                    self.detached_layers = False  # a kernel before 6.15: attach the view while the overlay takes it
            with attached(tree, disk_dir.with_name("lower")) as path:
                self._overlay(path, disk_dir, rootfs)

    @staticmethod
    def _overlay(lower: Path | str, disk_dir: Path, rootfs: Path) -> None:
        mount("overlay", rootfs, "overlay", f"lowerdir={lower},upperdir={disk_dir / 'upper'},workdir={disk_dir / 'work'}")

    def mount_disk(self, image: Path, disk_dir: Path, *, busy_wait: float = 5.0) -> None:
        """Loop-mount the disk on ``disk_dir`` with the overlay's ``upper/`` and ``work/`` on it
        (idempotent): everything but the overlay itself, which depends on the image.

        Never a second live ext4 on one image: an earlier mount that ``umount`` could only
        detach lazily (a process still held a file) keeps its loop device, and its file
        system, until the last user goes. Mounting the image again meanwhile would run two
        ext4 journals on one disk. So this waits up to ``busy_wait`` seconds for such a loop
        device to go, then refuses (EBUSY)."""
        disk_dir.mkdir(exist_ok=True)
        if not os.path.ismount(disk_dir):
            deadline = time.monotonic() + busy_wait
            while held := loops_backing(image):
                if time.monotonic() > deadline:
                    raise OSError(errno.EBUSY, f"{image} is still held by {', '.join(held)} (an earlier mount, detached lazily while a process used it): not mounting it twice")
                time.sleep(0.05)
            dev, fd = _loop_attach(image)
            try:
                mount(dev, disk_dir, "ext4", "errors=remount-ro,noinit_itable")
            finally:
                os.close(fd)  # unmounted or never mounted: autoclear detaches the device
        (disk_dir / "upper").mkdir(exist_ok=True)
        (disk_dir / "work").mkdir(exist_ok=True)

    def unmount(self, disk_dir: Path, rootfs: Path) -> None:
        umount(rootfs)
        umount(disk_dir)

    def remove(self, image: Path, disk_dir: Path, rootfs: Path) -> None:
        self.unmount(disk_dir, rootfs)
        image.unlink(missing_ok=True)
        for d in (rootfs, disk_dir):
            try:
                d.rmdir()
            except FileNotFoundError:
                pass
