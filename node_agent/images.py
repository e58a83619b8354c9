"""Sliver images: shared read-only base trees that each sliver overlays with its own layer.

A base is built once per node and never written afterwards; every sliver's rootfs is an
overlay of that base plus an upper directory on the sliver's own virtual disk, so a hundred
slivers cost one base on disk, and nothing a sliver does can change what another one sees.

* ``busybox``: a static busybox with its applets, from Debian's ``busybox-static``.
* ``host``: a skeleton whose /usr (and /lib*, /bin, /sbin when they are real directories)
  and a few /etc entries are the host's own, bind-mounted read-only through the OCI mounts
  list, so the host's ``python3`` runs inside without copying anything.

``python -m node_agent.images build [DIR]`` builds the bases ahead of time (e.g. at set-up).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

DEFAULT_DIR = Path("/var/lib/slicemesh/images")
BUSYBOX_CANDIDATES = (Path("/bin/busybox"), Path("/usr/bin/busybox"))
HOST_TOP = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
HOST_ETC = ("ssl", "alternatives", "ld.so.cache", "localtime")
MOUNTPOINTS = ("proc", "sys", "dev", "tmp", "root", "run", "var/tmp", "etc", "home")

PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
GROUP = "root:x:0:\nnogroup:x:65534:\n"
HOSTS = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"


class ImageError(Exception):
    pass


@dataclass(frozen=True)
class Image:
    """What a sliver's rootfs is made of: the overlay's lower dir and read-only host binds."""

    name: str
    lower: Path
    ro_binds: tuple[tuple[str, str], ...] = ()


def _static_busybox() -> Path | None:
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
    src = _static_busybox()
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


def _host_binds() -> tuple[tuple[str, str], ...]:
    binds = [("/usr", "/usr")]
    binds += [(f"/{n}", f"/{n}") for n in HOST_TOP if Path(f"/{n}").is_dir() and not Path(f"/{n}").is_symlink()]
    binds += [(f"/etc/{n}", f"/etc/{n}") for n in HOST_ETC if Path(f"/etc/{n}").exists()]
    return tuple(binds)


def available(images_dir: Path = DEFAULT_DIR) -> list[str]:
    """Images this node can offer now: busybox if its base exists or can be built; host on Linux."""
    names = []
    if (images_dir / "busybox/bin/busybox").is_file() or _static_busybox() is not None:
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


def main(argv: list[str]) -> int:
    if len(argv) < 1 or argv[0] != "build":
        print("usage: python -m node_agent.images build [IMAGES_DIR]", file=sys.stderr)
        return 2
    images_dir = Path(argv[1]) if len(argv) > 1 else DEFAULT_DIR
    for name in ("busybox", "host"):
        print(f"{name}: {prepare(name, images_dir).lower}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
