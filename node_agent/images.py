"""Image bases: read-only trees built once per node in the node's images directory.

A base is built once and never written afterwards. Every backend starts slivers from these
trees: a container's rootfs is an overlay of a base plus an upper directory on the sliver's
own disk (backends/runc/rootfs.py), and a VM's guest is made from the same busybox tree, so
a hundred slivers cost one base on disk and nothing a sliver does changes what another sees.

* ``busybox``: a static busybox with its applets, from Debian's ``busybox-static``; static,
  so the same tree runs as a container rootfs and inside a guest kernel's initramfs.
* ``host``: a skeleton of mount points (no files of its own) whose /usr, /lib* ... a
  container backend fills with the host's directories, bind-mounted read-only; it lives here
  because it is a tree in the images directory, built at set-up like the other base.

``python -m node_agent.images build [DIR]`` builds the bases ahead of time (e.g. at set-up).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

DEFAULT_DIR = Path("/var/lib/slicemesh/images")
BUSYBOX_CANDIDATES = (Path("/bin/busybox"), Path("/usr/bin/busybox"))
HOST_TOP = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
HOST_ETC = ("ssl", "alternatives", "ld.so.cache", "localtime")
BASES = ("busybox", "host")
MOUNTPOINTS = ("proc", "sys", "dev", "tmp", "root", "run", "var/tmp", "etc", "home")

PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
GROUP = "root:x:0:\nnogroup:x:65534:\n"
HOSTS = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"


class ImageError(Exception):
    pass


def static_busybox() -> Path | None:
    """A statically linked busybox: a dynamic one would need the host's libc inside."""
    for cand in BUSYBOX_CANDIDATES:
        if cand.is_file():
            with open(cand, "rb") as f:
                head = f.read(1 << 16)
            if b"ld-linux" not in head:  # a dynamic ELF names its interpreter early on
                return cand
    return None


def _skeleton(root: Path) -> None:
    for d in MOUNTPOINTS:
        (root / d).mkdir(parents=True, exist_ok=True)
    os.chmod(root / "tmp", 0o1777)
    os.chmod(root / "var/tmp", 0o1777)
    (root / "etc/passwd").write_text(PASSWD)
    (root / "etc/group").write_text(GROUP)
    (root / "etc/hosts").write_text(HOSTS)
    (root / "etc/resolv.conf").write_text("# no resolver: slivers reach only their node's bridge\n")


def _publish(tmp: Path, final: Path) -> Path:
    """Atomic rename so a half-built base is never used, and concurrent builders agree."""
    try:
        os.rename(tmp, final)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not final.is_dir():
            raise
    return final


def build_busybox(images_dir: Path = DEFAULT_DIR) -> Path:
    """Build (once) the busybox base and return its rootfs directory."""
    final = images_dir / "busybox"
    if (final / "bin/busybox").is_file():
        return final
    src = static_busybox()
    if src is None:
        raise ImageError("no static busybox on this host (install Debian package busybox-static)")
    images_dir.mkdir(parents=True, exist_ok=True)
    tmp = images_dir / f".busybox.{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    _skeleton(tmp)
    for d in ("bin", "sbin", "usr/bin", "usr/sbin"):
        (tmp / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, tmp / "bin/busybox")
    applets = subprocess.run([str(src), "--list-full"], check=True, capture_output=True, text=True).stdout
    for rel in applets.split():
        link = tmp / rel
        if rel != "bin/busybox" and not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to("/bin/busybox")
    return _publish(tmp, final)


def build_host(images_dir: Path = DEFAULT_DIR) -> Path:
    """Build (once) the skeleton the ``host`` image binds the host's directories into."""
    final = images_dir / "host"
    if (final / "usr").is_dir():
        return final
    images_dir.mkdir(parents=True, exist_ok=True)
    tmp = images_dir / f".host.{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    _skeleton(tmp)
    (tmp / "usr").mkdir()
    for name in HOST_TOP:
        host = Path("/") / name
        if host.is_symlink():  # merged /usr: same relative link, resolved inside the overlay
            (tmp / name).symlink_to(os.readlink(host))
        elif host.is_dir():
            (tmp / name).mkdir()
    for name in HOST_ETC:
        host = Path("/etc") / name
        if host.is_dir():
            (tmp / "etc" / name).mkdir()
        elif host.exists():
            (tmp / "etc" / name).touch()
    return _publish(tmp, final)


def build(name: str, images_dir: Path = DEFAULT_DIR) -> Path:
    """Build (once) the base called ``name`` and return its directory."""
    if name == "busybox":
        return build_busybox(images_dir)
    if name == "host":
        return build_host(images_dir)
    raise ImageError(f"unknown image {name!r} (bases: {', '.join(BASES)})")


def main(argv: list[str]) -> int:
    if len(argv) < 1 or argv[0] != "build":
        print("usage: python -m node_agent.images build [IMAGES_DIR]", file=sys.stderr)
        return 2
    images_dir = Path(argv[1]) if len(argv) > 1 else DEFAULT_DIR
    for name in BASES:
        print(f"{name}: {build(name, images_dir)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
