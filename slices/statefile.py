"""Atomic writes of small state files (desired-set caches, backend records, ready files)."""

from __future__ import annotations

import functools
import logging
import os
import stat
import struct
import threading
import time
import zlib
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


#: A scratch file's header: magic, sequence number, length and CRC-32 of the content after it.
_HEADER = struct.Struct("<8sQII")
_MAGIC = b"SMSCRAT1"
#: How many bytes a slot may hold past its content before a write shrinks it.
_SLACK = 64 * 1024


def _slots(path: Path) -> tuple[Path, Path]:
    return path.with_name(f"{path.name}.0"), path.with_name(f"{path.name}.1")


@functools.lru_cache(maxsize=1 << 14)
def _slot_names(path: Path) -> tuple[str, str]:
    """``_slots`` as strings, made once per path: a host writes each machine's files many
    times a second, and making the paths anew at each write showed in its profile."""
    a, b = _slots(path)
    return str(a), str(b)


def _slot_read(slot: Path) -> tuple[int, int, bytes] | None:
    """A slot's (sequence, mtime, content) if it holds a whole write, else None."""
    try:
        with open(slot, "rb") as f:
            raw = f.read()
            mtime = os.fstat(f.fileno()).st_mtime_ns
    except FileNotFoundError:
        return None
    if len(raw) < _HEADER.size:
        return None
    magic, seq, length, crc = _HEADER.unpack_from(raw)
    data = raw[_HEADER.size : _HEADER.size + length]
    if magic != _MAGIC or len(data) != length or zlib.crc32(data) != crc:
        return None  # torn by a crash: the other slot holds the write before
    return seq, mtime, data


def write_scratch(path: Path, data: bytes, *, mode: int = 0o644, seq: int | None = None) -> int:
    """Replace ``path``'s content whole, as ``write_atomic(fsync=False)`` does, at a tenth of
    its cost: for the state of simulated machines, hundreds per process, rewritten at each
    change. Returns the write's sequence number: pass it + 1 as ``seq`` to the next write of
    the same path (``ScratchWriter`` does); without ``seq``, the slots are read to find it and
    any whole file at ``path`` is removed.

    The content goes, with a header (sequence number, length, CRC-32), over the older of two
    slot files beside ``path`` (``<name>.0`` and ``<name>.1``), in place: no file is created,
    renamed or truncated to zero once both slots exist. ext4 (``auto_da_alloc``) starts writing
    a file's data out when it is renamed over another one or truncated to zero, so that an
    application that does not fsync still finds one of the two after a power loss; hundreds of
    those a second held a simulated machines' host in ``rename`` for seconds on a busy disk,
    heartbeats included. A write that a crash tears fails its CRC: ``read_scratch`` then finds
    the write before it in the other slot. No power-loss durability: the controller resends
    what a simulated machine lost.
    """
    if seq is None:  # this path's first write here: where its slots stand, and no other copy beside them
        found = [got[0] for got in map(_slot_read, _slots(path)) if got is not None]
        seq = max(found, default=0) + 1
        path.unlink(missing_ok=True)  # a whole file (``write_atomic``'s, or an older slicemesh's): its content, secrets included, is replaced
        _aside(path).unlink(missing_ok=True)
    body = _HEADER.pack(_MAGIC, seq, len(data), zlib.crc32(data)) + data
    fd = os.open(_slot_names(path)[seq % 2], os.O_WRONLY | os.O_CREAT, mode)
    try:
        st = os.fstat(fd)
        if stat.S_IMODE(st.st_mode) & ~mode:
            os.fchmod(fd, stat.S_IMODE(st.st_mode) & mode)  # a file left by someone else: never more open than asked
        os.pwrite(fd, body, 0)
        if st.st_size > len(body) + _SLACK:
            os.ftruncate(fd, len(body))  # never to zero: that too makes ext4 write the data out
    finally:
        os.close(fd)
    return seq


def read_scratch(path: Path) -> bytes | None:
    """What ``write_scratch`` or ``write_atomic`` last wrote whole to ``path``; None if nothing
    was ever written. A file ``write_atomic`` wrote after the last scratch write wins (a state
    directory that a simulated machine used, then a real one). Raises ``ValueError`` when
    scratch slots exist and none holds a whole write: not "nothing", which would let a caller
    forget state it still has."""
    slots = [got for got in map(_slot_read, _slots(path)) if got is not None]
    best = max(slots, default=None)
    for candidate in (path, _aside(path), path):  # the last look: a write finished meanwhile
        try:
            with open(candidate, "rb") as f:
                if best is not None and os.fstat(f.fileno()).st_mtime_ns <= best[1]:
                    break
                return f.read()
        except FileNotFoundError:
            continue
    if best is None and any(slot.exists() for slot in _slots(path)):
        raise ValueError(f"{path}: no scratch slot holds a whole write (torn or damaged)")
    return best[2] if best is not None else None


def _aside(path: Path) -> Path:
    """Where scratch writes before slots (slicemesh 0.17) moved the old file while writing."""
    return path.with_name(f".{path.name}.aside")


class ScratchWriter:
    """Writes scratch files (``write_scratch``) on a thread of its own: the latest content of
    each path, however many times it changed meanwhile.

    A simulated machines' host must not wait on the file system: its loop sends the
    heartbeats of all its machines, and any wait there (a busy disk, a journal commit) is
    theirs too. What is queued and not yet written when the process is killed is lost, as a
    machine's unwritten state is; ``flush`` before a clean stop writes it all.
    """

    #: seconds the thread lets changes gather once woken: a host's machines change their
    #: files many times a second under load, and each wake of the thread (a notify, a switch
    #: of the GIL) cost the loop more than the write (bench e2e: 9% of a host's time)
    GATHER = 0.02

    def __init__(self) -> None:
        self._pending: dict[Path, tuple[bytes, int]] = {}
        self._next: dict[Path, int] = {}  # each path's next sequence number (its directory exists)
        self._writing = False
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def put(self, path: Path, data: bytes, *, mode: int = 0o644) -> None:
        with self._cond:
            first = not self._pending  # the writer waits only when nothing is pending
            self._pending[path] = (data, mode)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="scratch-writer", daemon=True)
                self._thread.start()
            if first:
                self._cond.notify_all()

    def flush(self, timeout: float = 60.0) -> bool:
        """Wait until everything put so far is written; False if that took over ``timeout``."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._pending and not self._writing, timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: bool(self._pending))
                self._writing = True
            time.sleep(self.GATHER)  # puts meanwhile find something pending: no wake each
            with self._cond:
                batch, self._pending = self._pending, {}
            try:
                for path, (data, mode) in batch.items():
                    try:
                        self._write(path, data, mode)
                    except OSError as exc:  # a full disk: the next change writes it again
                        log.error("cannot write %s: %s", path, exc)
            finally:
                with self._cond:
                    self._writing = False
                    self._cond.notify_all()

    def _write(self, path: Path, data: bytes, mode: int) -> None:
        seq = self._next.pop(path, None)
        if seq is None:
            path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._next[path] = write_scratch(path, data, mode=mode, seq=seq) + 1
        except FileNotFoundError:  # its directory was removed meanwhile (a machine's state wiped)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._next[path] = write_scratch(path, data, mode=mode) + 1


#: one per process: the simulated machines a host process runs share it
SCRATCH = ScratchWriter()


def write_atomic_text(path: Path, text: str) -> None:
    write_atomic(path, text.encode())
