"""node_agent/vdisk.py on real loop devices and ext4: an image is never mounted twice."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from node_agent import vdisk
from node_agent.vdisk import VDisks

pytestmark = pytest.mark.timeout(60)


def test_a_lazily_detached_disk_is_not_mounted_again_while_it_lives(tmp_path: Path) -> None:
    """A process holding a file keeps ``umount`` busy; after 2 s it detaches lazily, and the
    ext4 lives on. Mounting the image again then would run two journals on one disk: the
    mount waits, then refuses; once the last user goes, it mounts (with the file's data)."""
    disks = VDisks(tmp_path / "templates")
    image, disk = tmp_path / "disk.img", tmp_path / "disk"
    disks.create(image, 16 * 1024 * 1024)
    disks.mount_disk(image, disk)
    holder = os.open(disk / "upper" / "kept", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.write(holder, b"still here")
        vdisk.umount(disk, timeout=0.1)  # busy: detached lazily
        assert not os.path.ismount(disk)
        assert vdisk.loops_backing(image), "the detached ext4 still holds its loop device"
        with pytest.raises(OSError, match="not mounting it twice") as err:
            disks.mount_disk(image, disk, busy_wait=0.3)
        assert err.value.errno == 16 and not os.path.ismount(disk)
    finally:
        os.close(holder)  # the last user: the lazy unmount completes, autoclear detaches the loop
    disks.mount_disk(image, disk, busy_wait=10)
    try:
        assert (disk / "upper" / "kept").read_bytes() == b"still here"
        assert len(vdisk.loops_backing(image)) == 1
    finally:
        vdisk.umount(disk)
    assert vdisk.loops_backing(image) == []
