"""A slice's code as one bundle: a deterministic tar of a directory (or a tarball as given),
named by its SHA-256. Pure but for reading the files.

Deterministic, so the same tree is the same digest on every machine and every run: entries
sorted, owner root, mtime 0, permissions reduced to 0755/0644 (the sliver sees it read-only).
Only regular files, directories and symlinks that stay inside the tree are taken; anything
else (devices, sockets, a symlink out of the tree) is refused with its path. A given tarball
is checked the same way before it is accepted: no absolute names, no ``..``, no links out.
"""

from __future__ import annotations

import hashlib
import io
import os
import posixpath
import tarfile
from pathlib import Path

from slices.errors import SliceMeshError

MAX_ENTRIES = 100_000


class BundleError(SliceMeshError):
    code = "invalid-spec"


def _inside(name: str) -> bool:
    norm = posixpath.normpath(name)
    return not (name.startswith("/") or norm == ".." or norm.startswith("../"))


def _link_inside(member: str, target: str) -> bool:
    if target.startswith("/"):
        return False
    return _inside(posixpath.join(posixpath.dirname(member), target))


def pack_dir(root: Path) -> bytes:
    """The tree under ``root`` as a deterministic tar."""
    root = root.resolve()
    buf = io.BytesIO()
    entries: list[Path] = []
    for top, dirs, files in os.walk(root):
        dirs.sort()
        for name in [*dirs, *sorted(files)]:
            entries.append(Path(top) / name)
            if len(entries) > MAX_ENTRIES:
                raise BundleError(f"{root}: more than {MAX_ENTRIES} files")
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(entries, key=lambda p: str(p.relative_to(root))):
            rel = str(path.relative_to(root))
            st = path.lstat()
            info = tarfile.TarInfo(rel)
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            if path.is_symlink():
                target = os.readlink(path)
                if not _link_inside(rel, target):
                    raise BundleError(f"{path}: a symlink out of the code directory ({target})")
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, target, 0o777
                tar.addfile(info)
            elif path.is_dir():
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            elif path.is_file():
                info.size, info.mode = st.st_size, 0o755 if st.st_mode & 0o111 else 0o644
                with open(path, "rb") as f:
                    tar.addfile(info, f)
            else:
                raise BundleError(f"{path}: not a file, directory or symlink")
    return buf.getvalue()


def check_tar(data: bytes) -> None:
    """Refuse a tarball that could write outside the tree it unpacks into, or holds devices."""
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
            for count, m in enumerate(tar):
                if count > MAX_ENTRIES:
                    raise BundleError(f"more than {MAX_ENTRIES} entries")
                if not _inside(m.name):
                    raise BundleError(f"{m.name!r}: a path outside the bundle")
                if m.issym() and not _link_inside(m.name, m.linkname):
                    raise BundleError(f"{m.name!r}: a symlink out of the bundle ({m.linkname})")
                if m.islnk() and not _inside(m.linkname):
                    raise BundleError(f"{m.name!r}: a hard link out of the bundle")
                if not (m.isfile() or m.isdir() or m.issym() or m.islnk()):
                    raise BundleError(f"{m.name!r}: not a file, directory or link")
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise BundleError(f"not a readable tarball: {exc}") from None


def load(path: Path) -> bytes:
    """The bundle for ``path``: a directory packed, or a tarball as it is (checked)."""
    if path.is_dir():
        return pack_dir(path)
    if not path.is_file():
        raise BundleError(f"code.path: {path} is neither a directory nor a tarball")
    data = path.read_bytes()
    check_tar(data)
    return data


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def unpack(data: bytes, dest: Path) -> None:
    """Unpack a checked bundle into ``dest`` (made here), read-only for everyone."""
    check_tar(data)
    dest.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
        tar.extractall(dest, filter="data")
    for top, dirs, files in os.walk(dest):
        for name in files:
            p = Path(top) / name
            if not p.is_symlink():
                p.chmod(0o555 if p.stat().st_mode & 0o111 else 0o444)
        for name in dirs:
            p = Path(top) / name
            if not p.is_symlink():
                p.chmod(0o555)
    dest.chmod(0o555)
