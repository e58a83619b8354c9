"""Atomic writes of small state files (desired-set caches, backend records, ready files)."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger(__name__)


def open_new(path: Path, mode: int) -> BinaryIO:
    """``path`` created afresh for writing, with ``mode`` (before the umask) from its first
    byte. A leftover of a crash keeps its own mode, so it is removed first."""
    path.unlink(missing_ok=True)
    return open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), "wb")


def write_atomic(path: Path, data: bytes, *, fsync: bool = True, mode: int = 0o644) -> None:
    """Replace ``path`` whole: readers see the old or the new content, never a mix.

    ``fsync=False`` keeps atomicity but not durability across a power loss: for simulated
    machines, whose thousands of small writes would otherwise dominate a scale run. ``mode``
    (before the umask) holds from the first byte written: a file of secrets is never readable
    by others, not even for a moment.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open_new(tmp, mode) as f:
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
    with open_new(tmp, mode) as f:
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


class ScratchWriter:
    """Writes scratch files (``write_scratch``) on a thread of its own: the latest content of
    each path, however many times it changed meanwhile.

    A simulated machines' host must not wait on the file system: its loop sends the
    heartbeats of all its machines, and any wait there (a busy disk, a journal commit) is
    theirs too. What is queued and not yet written when the process is killed is lost, as a
    machine's unwritten state is; ``flush`` before a clean stop writes it all.
    """

    def __init__(self) -> None:
        self._pending: dict[Path, tuple[bytes, int]] = {}
        self._writing = False
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def put(self, path: Path, data: bytes, *, mode: int = 0o644) -> None:
        with self._cond:
            self._pending[path] = (data, mode)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="scratch-writer", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def flush(self, timeout: float = 60.0) -> bool:
        """Wait until everything put so far is written; False if that took over ``timeout``."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._pending and not self._writing, timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: bool(self._pending))
                path, (data, mode) = next(iter(self._pending.items()))
                del self._pending[path]
                self._writing = True
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                write_scratch(path, data, mode=mode)
            except OSError as exc:  # a full disk: the next change writes it again
                log.error("cannot write %s: %s", path, exc)
            finally:
                with self._cond:
                    self._writing = False
                    self._cond.notify_all()


#: one per process: the simulated machines a host process runs share it
SCRATCH = ScratchWriter()


def write_atomic_text(path: Path, text: str) -> None:
    write_atomic(path, text.encode())
