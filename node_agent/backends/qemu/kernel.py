"""The guest kernel: Debian's cloud kernel, unpacked (never installed) into the images directory.

Why Debian's ``linux-image-*-cloud-amd64``: it is built for virtual machines, signed and
maintained, and fetched with the host's own package tools; the project ships no kernel. It is
unpacked with ``dpkg -x`` under ``<images>/kernel/<package>/`` and ``<images>/kernel/current``
points at the one in use, so a newer kernel is a new directory and never half-written.

The drivers a microvm guest needs (virtio-mmio, -blk, -net, -console, overlay, the ACPI power
button and evdev for a graceful power-down) are modules in that kernel. The initramfs carries
exactly those and their dependencies, in load order, read from each module's ``.modinfo``
section (there is no ``modules.dep`` without ``depmod``, which would mean installing it).

The kernel's own bzImage header also says how much RAM it needs to unpack itself (``init_size``
above the 16 MiB load address): below that a guest cannot boot at all, so a smaller ``memory``
is refused with that figure instead of a guest that silently triple-faults.
"""

from __future__ import annotations

import lzma
import os
import re
import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

META_PACKAGE = "linux-image-cloud-amd64"
#: What the guest's init loads, by module name; dependencies are added in front of each.
WANTED_MODULES = ("virtio_mmio", "virtio_blk", "virtio_net", "virtio_console", "ext4", "overlay", "button", "evdev")
MiB = 1 << 20
#: Room above the decompressed kernel for the initramfs, page tables and a busybox userland.
BOOT_HEADROOM = 24 * MiB


class KernelError(Exception):
    pass


@dataclass(frozen=True)
class Kernel:
    """An unpacked kernel: its bzImage, its version string and its modules directory."""

    root: Path
    version: str

    @property
    def image(self) -> Path:
        return self.root / "boot" / f"vmlinuz-{self.version}"

    @property
    def modules_dir(self) -> Path:
        return self.root / "lib" / "modules" / self.version


# -- pure parts -------------------------------------------------------------------------


def package_from_depends(apt_cache_output: str) -> str:
    """The versioned image package the meta package depends on (``apt-cache depends`` text)."""
    for line in apt_cache_output.splitlines():
        m = re.match(r"\s*Depends:\s*(linux-image-[0-9][^\s]*-cloud-amd64)\s*$", line)
        if m:
            return m.group(1)
    raise KernelError(f"apt-cache depends {META_PACKAGE} names no linux-image-*-cloud-amd64 package")


def modinfo(data: bytes) -> dict[str, str]:
    """The ``key=value`` strings of an ELF64 kernel module's ``.modinfo`` section."""
    if data[:4] != b"\x7fELF" or data[4] != 2:
        raise KernelError("not an ELF64 module")
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)

    def section(i: int) -> tuple[int, int, int]:
        name, _type, _flags, _addr, offset, size = struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize)
        return name, offset, size

    _, str_off, _ = section(shstrndx)
    for i in range(shnum):
        name, offset, size = section(i)
        end = data.index(b"\0", str_off + name)
        if data[str_off + name : end] == b".modinfo":
            out: dict[str, str] = {}
            for item in data[offset : offset + size].split(b"\0"):
                key, sep, value = item.decode(errors="replace").partition("=")
                if sep and key not in out:
                    out[key] = value
            return out
    return {}


def load_order(wanted: tuple[str, ...], depends: dict[str, list[str]], builtin: set[str]) -> list[str]:
    """Modules to load, dependencies first; built-in ones (and unknown built-ins) are left out.

    ``depends`` maps each available module to its ``depends=`` list.
    """
    order: list[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        name = name.replace("-", "_")
        if name in builtin or name in order:
            return
        if name not in depends:
            raise KernelError(f"kernel module {name} is neither built in nor shipped with this kernel")
        if name in visiting:
            raise KernelError(f"kernel module dependency cycle through {name}")
        visiting.add(name)
        for dep in depends[name]:
            visit(dep)
        visiting.discard(name)
        order.append(name)

    for name in wanted:
        visit(name)
    return order


def min_guest_memory(bzimage_header: bytes) -> int:
    """Smallest guest RAM that boots this bzImage: load address + ``init_size`` + headroom, in MiB steps of 8."""
    if bzimage_header[0x202:0x206] != b"HdrS":
        raise KernelError("not a bzImage (no HdrS signature)")
    pref_address = struct.unpack_from("<Q", bzimage_header, 0x258)[0]
    init_size = struct.unpack_from("<I", bzimage_header, 0x260)[0]
    need = pref_address + init_size + BOOT_HEADROOM
    step = 8 * MiB
    return int(-(-need // step) * step)


# -- the unpacked tree ------------------------------------------------------------------


def find(images_dir: Path) -> Kernel:
    """The kernel in use: ``<images>/kernel/current``; a clear error when setup has not run."""
    current = images_dir / "kernel" / "current"
    if not current.exists():
        raise KernelError(f"no guest kernel under {images_dir / 'kernel'} (run `make setup`, or python -m node_agent.backends.qemu build)")
    root = current.resolve()
    images = sorted((root / "boot").glob("vmlinuz-*"))
    if not images:
        raise KernelError(f"{root} holds no boot/vmlinuz-*")
    return Kernel(root, images[-1].name.removeprefix("vmlinuz-"))


def module_files(kernel: Kernel) -> dict[str, Path]:
    """Module name -> file, for every module shipped with the kernel."""
    out: dict[str, Path] = {}
    for path in (kernel.modules_dir / "kernel").rglob("*.ko*"):
        name = path.name.split(".ko")[0].replace("-", "_")
        out[name] = path
    return out


def read_module(path: Path) -> bytes:
    """A module's ELF bytes; xz-compressed modules (newer Debian kernels) are unpacked here so
    busybox's insmod in the guest needs no decompressor."""
    if path.name.endswith(".ko"):
        return path.read_bytes()
    if path.name.endswith(".ko.xz"):
        return lzma.decompress(path.read_bytes())
    raise KernelError(f"{path.name}: unsupported module compression (only .ko and .ko.xz)")


def builtin_modules(kernel: Kernel) -> set[str]:
    try:
        lines = (kernel.modules_dir / "modules.builtin").read_text().split()
    except OSError:
        return set()
    return {Path(line).name.split(".ko")[0].replace("-", "_") for line in lines}


def guest_modules(kernel: Kernel, wanted: tuple[str, ...] = WANTED_MODULES) -> list[tuple[str, Path]]:
    """(name, file) of every module the guest must load, in load order."""
    files = module_files(kernel)
    builtin = builtin_modules(kernel)
    # Only the .modinfo of what is reachable from ``wanted`` is read (reading all 2,000 is slow).
    depends: dict[str, list[str]] = {}
    todo = [w.replace("-", "_") for w in wanted]
    while todo:
        name = todo.pop()
        if name in depends or name in builtin or name not in files:
            continue
        depends[name] = [d for d in modinfo(read_module(files[name])).get("depends", "").split(",") if d]
        todo.extend(depends[name])
    order = load_order(wanted, depends, builtin)
    return [(name, files[name]) for name in order]


# -- fetching (make setup) --------------------------------------------------------------


def resolve_package() -> str:
    """``apt-cache depends linux-image-cloud-amd64``, after one ``apt-get update`` if the lists lack it."""
    for attempt in (0, 1):
        proc = subprocess.run(["apt-cache", "depends", META_PACKAGE], capture_output=True, text=True)
        if proc.returncode == 0:
            try:
                return package_from_depends(proc.stdout)
            except KernelError:
                if attempt:
                    raise
        elif attempt:
            raise KernelError(f"apt-cache depends {META_PACKAGE}: {proc.stderr.strip()[:200]}")
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True)
    raise KernelError("unreachable")


def fetch(images_dir: Path) -> Kernel:
    """Download and unpack the current cloud kernel unless it already is; point ``current`` at it."""
    package = resolve_package()
    kdir = images_dir / "kernel"
    final = kdir / package
    if not (final / "boot").is_dir():
        kdir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=kdir) as tmp:
            # apt drops privileges to _apt for downloads into a directory it can write.
            os.chmod(tmp, 0o755)
            proc = subprocess.run(["apt-get", "download", "-q", package], cwd=tmp, capture_output=True, text=True)
            debs = list(Path(tmp).glob("*.deb"))
            if proc.returncode != 0 or not debs:
                raise KernelError(f"apt-get download {package}: {proc.stderr.strip()[-300:]}")
            unpacked = Path(tmp) / "root"
            subprocess.run(["dpkg", "-x", str(debs[0]), str(unpacked)], check=True, capture_output=True)
            shutil.rmtree(final, ignore_errors=True)
            os.rename(unpacked, final)
    link = kdir / "current"
    tmp_link = kdir / f".current.{os.getpid()}"
    tmp_link.unlink(missing_ok=True)
    tmp_link.symlink_to(package)
    os.replace(tmp_link, link)
    return find(images_dir)
