"""The guest's initramfs: one shared base archive per node, plus a small per-sliver archive.

The kernel unpacks concatenated cpio archives in order into one tree, so a sliver's initrd is
``<base>.gz`` followed by an uncompressed archive holding only ``/slicemesh/`` (its hostname,
address, command and environment): one base serves every sliver, a sliver costs a few hundred
bytes and a file concatenation, and nothing about a sliver has to fit on the kernel command
line or be quoted for it.

Base layout (see guest/init.sh for how it is used):

    /init                      guest/init.sh
    /bin, /sbin, /usr          symlinks into /image, so the image's busybox runs the init stage
    /dev/console               the kernel opens it for init's stdio
    /lib/modules/*.ko, load    the modules the guest needs, and their load order
    /image/...                 the busybox image tree (node_agent/images.py), read-only lower layer
    /image/sbin/slicemesh-agent  the guest agent (guest/agent.c, built static)

Archives are written here (newc format) rather than by ``cpio``: the file list is data, and
device nodes and root ownership need no privileges this way.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import shlex
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from node_agent.backends.qemu.kernel import Kernel, guest_modules, read_module
from slices.statefile import open_new

GUEST_DIR = Path(__file__).parent / "guest"
INIT_SCRIPT = GUEST_DIR / "init.sh"


@dataclass(frozen=True)
class Entry:
    """One archive member; ``data`` is the file body or the symlink target."""

    path: str
    mode: int
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)


def directory(path: str, perm: int = 0o755) -> Entry:
    return Entry(path, stat.S_IFDIR | perm)


def file(path: str, data: bytes, perm: int = 0o644) -> Entry:
    return Entry(path, stat.S_IFREG | perm, data)


def symlink(path: str, target: str) -> Entry:
    return Entry(path, stat.S_IFLNK | 0o777, target.encode())


def _pad4(n: int) -> bytes:
    return b"\0" * (-n % 4)


def cpio(entries: Iterable[Entry]) -> bytes:
    """A newc archive of ``entries`` (owned by root, mtime 0 so equal inputs give equal bytes)."""
    out = bytearray()
    ino = 1

    def member(name: str, mode: int, data: bytes, rdev: tuple[int, int]) -> None:
        nonlocal ino
        fields = (ino, mode, 0, 0, 2 if stat.S_ISDIR(mode) else 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(name) + 1, 0)
        header = b"070701" + b"".join(b"%08X" % f for f in fields)
        out.extend(header + name.encode() + b"\0")
        out.extend(_pad4(len(header) + len(name) + 1))
        out.extend(data + _pad4(len(data)))
        ino += 1

    for e in entries:
        member(e.path.lstrip("/") or ".", e.mode, e.data, e.rdev)
    member("TRAILER!!!", 0, b"", (0, 0))
    return bytes(out)


def tree(root: Path, prefix: str) -> list[Entry]:
    """Entries for everything under ``root`` (dirs, files, symlinks), placed under ``prefix``."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel = os.path.relpath(dirpath, root)
        base = prefix if rel == "." else f"{prefix}/{rel}"
        out.append(directory(base, stat.S_IMODE(os.lstat(dirpath).st_mode)))
        for name in sorted(filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]):
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                out.append(symlink(f"{base}/{name}", os.readlink(path)))
            elif stat.S_ISREG(st.st_mode):
                out.append(file(f"{base}/{name}", Path(path).read_bytes(), stat.S_IMODE(st.st_mode)))
    return out


def base_entries(image_root: Path, agent: bytes, init_script: bytes, modules: list[tuple[str, bytes]]) -> list[Entry]:
    """Everything in the shared base archive (pure apart from reading the image tree)."""
    entries = [
        file("/init", init_script, 0o755),
        symlink("/bin", "image/bin"),
        symlink("/sbin", "image/sbin"),
        symlink("/usr", "image/usr"),
        directory("/dev"),
        Entry("/dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1)),
        directory("/proc"),
        directory("/sys"),
        directory("/mnt"),
        directory("/newroot"),
        directory("/lib"),
        directory("/lib/modules"),
        file("/lib/modules/load", "".join(f"{name}\n" for name, _ in modules).encode()),
    ]
    entries += [file(f"/lib/modules/{name}.ko", data) for name, data in modules]
    entries += [e for e in tree(image_root, "/image") if e.path != "/image/sbin/slicemesh-agent"]
    entries.append(file("/image/sbin/slicemesh-agent", agent, 0o755))
    return entries


@dataclass(frozen=True)
class SliverConfig:
    """What one guest needs to know about itself; becomes ``/slicemesh/`` in its initrd."""

    hostname: str
    address: str | None  # "10.1.2.3/24"
    gateway: str | None
    argv: tuple[str, ...]
    env: dict[str, str]
    stop_grace: int = 5
    code: bool = False  # /dev/vdb holds the slice's code: mounted read-only at /code
    #: Files for the guest's /etc at boot (``hosts``, ``resolv.conf``: slicenet.py), by name.
    etc: dict[str, str] = dataclasses.field(default_factory=dict)


def sliver_archive(cfg: SliverConfig) -> bytes:
    """The per-sliver cpio; ``config`` is sourced by init.sh, so every value is shell-quoted."""
    if not cfg.argv:
        raise ValueError("a sliver needs a command")
    for text in (*cfg.argv, *cfg.env, *cfg.env.values()):
        if "\0" in text:
            raise ValueError("command and environment cannot contain NUL bytes")
    config = "".join(
        f"{key}={shlex.quote(value or '')}\n"
        for key, value in (("SLIVER_HOSTNAME", cfg.hostname), ("SLIVER_ADDRESS", cfg.address), ("SLIVER_GATEWAY", cfg.gateway), ("SLIVER_CODE", "1" if cfg.code else ""))
    )
    argv = b"".join(a.encode() + b"\0" for a in cfg.argv)
    env = b"".join(f"{k}={v}".encode() + b"\0" for k, v in sorted(cfg.env.items()))
    return cpio(
        [
            directory("/slicemesh"),
            file("/slicemesh/config", config.encode()),
            file("/slicemesh/argv", argv),
            file("/slicemesh/env", env),
            file("/slicemesh/stop_grace", f"{cfg.stop_grace}\n".encode()),
            *([directory("/slicemesh/etc")] if cfg.etc else []),
            *(file(f"/slicemesh/etc/{name}", text.encode()) for name, text in sorted(cfg.etc.items()) if "/" not in name),
        ]
    )


def write_initrd(base: Path, cfg: SliverConfig, dest: Path) -> None:
    """``dest`` = base archive + this sliver's archive (written aside, then renamed). It holds
    the slice's environment (secrets): readable by root (QEMU) only, from its first byte."""
    tmp = dest.with_suffix(".tmp")
    with open_new(tmp, 0o600) as out, open(base, "rb") as src:
        os.sendfile(out.fileno(), src.fileno(), 0, os.fstat(src.fileno()).st_size)
        out.write(sliver_archive(cfg))
    os.replace(tmp, dest)


def build_base(out_dir: Path, image_root: Path, agent_binary: Path, kernel: Kernel) -> Path:
    """The shared base archive for this kernel, image and agent; rebuilt only when they change."""
    modules = [(name, read_module(path)) for name, path in guest_modules(kernel)]
    agent = agent_binary.read_bytes()
    init = INIT_SCRIPT.read_bytes()
    entries = base_entries(image_root, agent, init, modules)
    body = cpio(entries)
    digest = hashlib.sha256(body).hexdigest()[:16]
    final = out_dir / f"initramfs-{kernel.version}-{digest}.gz"
    if final.exists():
        os.utime(final)  # in use: older builds are cleaned up by age (assets._drop_stale)
    else:
        out_dir.mkdir(parents=True, exist_ok=True)
        tmp = final.with_suffix(f".{os.getpid()}.tmp")
        packed = gzip.compress(body, compresslevel=6, mtime=0)
        # The per-sliver archive that follows must start 4-byte aligned; the kernel skips the NULs.
        tmp.write_bytes(packed + b"\0" * (-len(packed) % 4))
        os.replace(tmp, final)
    return final
