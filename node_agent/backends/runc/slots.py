"""Container sliver directories made ahead of need ("warm slots").

A slot is what ``<slivers>/<key>/`` holds before anything about the sliver is known: its
disk image (a sparse copy of the formatted template), loop-mounted on ``disk/`` with the
overlay's ``upper/`` and ``work/`` in it, and an empty ``bundle/rootfs/``. Taking one is a
rename (mounts follow their directory), so a sliver's start-up is left with the overlay
mount (the image is the sliver's choice), its config and runc.

Slots are made for the disk size the last sliver asked for (the default size at first): a
node's slivers mostly come from a few slice specs. A sliver of another size is made cold,
and the slots follow it. A slot is built under a ``.tmp`` name and renamed when complete,
so a half-made one is never taken; whatever a killed agent left here is removed at start.
"""

from __future__ import annotations

import itertools
import os
import shutil
import threading
from pathlib import Path

from node_agent.vdisk import DEFAULT_SIZE, VDisks


def slot_parts(path: Path) -> tuple[Path, Path, Path]:
    """(disk image, disk mount point, rootfs mount point) of a slot or sliver directory."""
    return path / "disk.img", path / "disk", path / "bundle" / "rootfs"


class Slots:
    def __init__(self, warm_dir: Path, disks: VDisks) -> None:
        self.warm_dir, self.disks = warm_dir, disks
        self.wanted = 0
        self.size = DEFAULT_SIZE
        self._ready: list[tuple[Path, int]] = []
        self._lock = threading.Lock()
        self._names = itertools.count()
        if warm_dir.is_dir():
            for stale in warm_dir.iterdir():  # a killed agent's
                self._remove(stale)
        warm_dir.mkdir(parents=True, exist_ok=True)

    def _remove(self, path: Path) -> None:
        self.disks.remove(*slot_parts(path))
        shutil.rmtree(path, ignore_errors=True)

    def take(self, size: int, dest: Path) -> bool:
        """Move a ready slot of ``size`` bytes to ``dest`` (which must not exist); False when
        there is none (and make the next ones that size)."""
        with self._lock:
            self.size = size
            path = next((p for p, s in self._ready if s == size), None)
            if path is None:
                return False
            self._ready = [(p, s) for p, s in self._ready if p != path]
        try:
            os.rename(path, dest)
        except OSError:
            self._remove(path)
            return False
        return True

    def fill_one(self) -> bool:
        """Warmer job: drop one slot of a size no longer asked for, or make one more."""
        with self._lock:
            size = self.size
            stale = next((p for p, s in self._ready if s != size), None)
            if stale is not None:
                self._ready = [(p, s) for p, s in self._ready if p != stale]
            elif len(self._ready) >= self.wanted:
                return False
        if stale is not None:
            self._remove(stale)
            return True
        name = f"{os.getpid()}.{next(self._names)}"
        tmp = self.warm_dir / f"{name}.tmp"
        try:
            image, disk_dir, rootfs = slot_parts(tmp)
            rootfs.mkdir(parents=True)
            self.disks.create(image, size)
            self.disks.mount_disk(image, disk_dir)
            path = tmp.rename(self.warm_dir / name)
        except BaseException:
            self._remove(tmp)
            raise
        with self._lock:
            self._ready.append((path, size))
        return True

    def release(self) -> None:
        """Unmount and remove every slot (agent shutdown)."""
        with self._lock:
            ready, self._ready = self._ready, []
        for path, _ in ready:
            self._remove(path)

    def ready_count(self) -> int:
        with self._lock:
            return len(self._ready)
