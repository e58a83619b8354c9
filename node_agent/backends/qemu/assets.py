"""What a VM sliver boots from, made once per node: kernel, guest agent, base initramfs.

``python -m node_agent.backends.qemu build [IMAGES_DIR]`` is what ``make setup`` runs:
it fetches the kernel (apt-get download + dpkg -x, see kernel.py), compiles the guest agent
static with the host's gcc and builds the base initramfs. The backend calls ``ensure`` at
start, which does the same minus the download, so a changed agent source or image is picked
up without a manual step; everything is keyed by content, so that costs one hash when
nothing changed.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from node_agent import images
from node_agent.backends.qemu import initramfs, kernel

AGENT_SOURCE = initramfs.GUEST_DIR / "agent.c"
STALE_AFTER_S = 24 * 3600.0


class AssetError(Exception):
    pass


@dataclass(frozen=True)
class Assets:
    kernel: kernel.Kernel
    initramfs: Path
    min_memory: int  # bytes of guest RAM below which this kernel cannot boot


def vm_dir(images_dir: Path) -> Path:
    return images_dir / "vm"


def build_agent(images_dir: Path) -> Path:
    """The guest agent binary for the current source (``gcc -static``), compiled once."""
    source = AGENT_SOURCE.read_bytes()
    out = vm_dir(images_dir) / f"slicemesh-agent-{hashlib.sha256(source).hexdigest()[:16]}"
    if out.exists():
        os.utime(out)  # in use: older builds are cleaned up by age
        return out
    gcc = shutil.which("gcc")
    if gcc is None:
        raise AssetError("gcc is not installed: the guest agent cannot be built (Debian packages gcc, libc6-dev; run `make setup`)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".{os.getpid()}.tmp")
    proc = subprocess.run([gcc, "-static", "-Os", "-s", "-Wall", "-o", str(tmp), str(AGENT_SOURCE)], capture_output=True, text=True)
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise AssetError(f"building the guest agent failed: {proc.stderr.strip()[-400:]}")
    os.replace(tmp, out)
    return out


def ensure(images_dir: Path) -> Assets:
    """Kernel (must be fetched already), agent and base initramfs for this node."""
    try:
        kern = kernel.find(images_dir)
        agent = build_agent(images_dir)
        image_root = images.build_busybox(images_dir)
        base = initramfs.build_base(vm_dir(images_dir), image_root, agent, kern)
        with open(kern.image, "rb") as f:
            min_memory = kernel.min_guest_memory(f.read(1024))
    except (kernel.KernelError, images.ImageError) as exc:
        raise AssetError(str(exc)) from None
    _drop_stale(vm_dir(images_dir), keep={agent.name, base.name})
    return Assets(kern, base, min_memory)


def _drop_stale(directory: Path, keep: set[str], age: float = STALE_AFTER_S) -> None:
    """Earlier builds of the agent and base initramfs. No VM reads them (each has its own
    initrd), but another checkout of a different version may be using one on the same host:
    each start touches what it uses, and only what nobody touched for ``age`` seconds goes."""
    now = time.time()
    for path in [*directory.glob("slicemesh-agent-*"), *directory.glob("initramfs-*.gz")]:
        with contextlib.suppress(OSError):
            if path.name not in keep and now - path.stat().st_mtime > age:
                path.unlink()


def build(images_dir: Path) -> Assets:
    """Everything, the kernel download included (``make setup``)."""
    try:
        kernel.fetch(images_dir)
    except (kernel.KernelError, subprocess.CalledProcessError) as exc:
        raise AssetError(f"fetching the guest kernel failed: {exc}") from None
    return ensure(images_dir)


def main(argv: list[str]) -> int:
    if not argv or argv[0] != "build":
        print("usage: python -m node_agent.backends.qemu build [IMAGES_DIR]", file=sys.stderr)
        return 2
    images_dir = Path(argv[1]) if len(argv) > 1 else images.DEFAULT_DIR
    try:
        a = build(images_dir)
    except AssetError as exc:
        print(f"vm assets: {exc}", file=sys.stderr)
        return 1
    print(f"vm kernel: {a.kernel.image} (guests need >= {a.min_memory >> 20} MiB)")
    print(f"vm initramfs: {a.initramfs}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
