"""What a container sliver's rootfs is made of: an image base as the overlay's lower layer,
plus, for the ``host`` image, the host's own directories bind-mounted read-only.

The bases themselves are node-level (``node_agent/images.py``: a VM's guest is made from the
same busybox tree); only the overlay and the OCI bind mounts are a container's business.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from node_agent.images import DEFAULT_DIR, HOST_ETC, HOST_TOP, ImageError, build_busybox, build_host, static_busybox


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
