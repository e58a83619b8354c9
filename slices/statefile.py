"""Atomic writes of small state files (desired-set caches, backend records, ready files)."""

from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: Path, data: bytes, *, fsync: bool = True, mode: int = 0o644) -> None:
    """Replace ``path`` whole: readers see the old or the new content, never a mix.

    ``fsync=False`` keeps atomicity but not durability across a power loss: for simulated
    machines, whose thousands of small writes would otherwise dominate a scale run. ``mode``
    (before the umask) holds from the first byte written: a file of secrets is never readable
    by others, not even for a moment.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)  # a leftover of a crash keeps its own mode; start afresh
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), "wb") as f:
        f.write(data)
        if fsync:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)


def write_scratch(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Replace ``path`` whole, as ``write_atomic(fsync=False)`` does, without making the disk
    work: for the state of simulated machines, hundreds per process, rewritten at each change.

    ext4 (``auto_da_alloc``) starts writing a file's data out when it is renamed over another
    one, so that an application that does not fsync still finds one of the two after a power
    loss. Hundreds of those a second held a simulated machines' host in ``rename`` for seconds
    on a busy disk, heartbeats included. Here nothing is renamed over anything: the old file
    is moved aside first, the new one takes its name, the old one goes. A crash between the
    two renames leaves the old one aside, where ``read_scratch`` finds it. No power-loss
    durability: the controller resends what a simulated machine lost.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    aside = _aside(path)
    tmp.unlink(missing_ok=True)
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), "wb") as f:
        f.write(data)
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        pass
    os.rename(tmp, path)
    aside.unlink(missing_ok=True)


def read_scratch(path: Path) -> bytes | None:
    """What ``write_scratch`` (or ``write_atomic``) last wrote whole to ``path``; None if nothing."""
    for candidate in (path, _aside(path), path):  # the last look: a write finished meanwhile
        try:
            return candidate.read_bytes()
        except FileNotFoundError:
            continue
    return None


def _aside(path: Path) -> Path:
    return path.with_name(f".{path.name}.aside")


def write_atomic_text(path: Path, text: str) -> None:
    write_atomic(path, text.encode())
