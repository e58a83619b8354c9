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


def write_atomic_text(path: Path, text: str) -> None:
    write_atomic(path, text.encode())
