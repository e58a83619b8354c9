"""A file from one agent to another over TCP: sparse-aware, verified by digest. A cold move
sends a sliver's disk image this way; a peer agent sends a code bundle (codefetch.py).

A cold move sends one file: the sliver's ext4 disk image, which holds its whole writable layer
(``upper/`` and ``work/`` of its overlay root). The image is mostly holes, so only its data
extents travel (``SEEK_DATA``/``SEEK_HOLE``), and the receiver recreates the holes.

The stream, sender to receiver::

    MAGIC  token (32 hex)  u32 header length  header (JSON: size, meta)
    { u64 offset  u64 length  data }*   u64 END  u64 0   sha256 (32 bytes)

The digest covers every extent's offset, length and data in order, so a cut, reordered or
altered stream fails verification; the receiver answers one line, ``ok`` or ``bad: <why>``,
and only a verified image is renamed into place. A connection with the wrong token is closed
and the receiver keeps waiting until its deadline: a stranger cannot spoil a move.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import hmac
import json
import os
import socket
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slices import faults

MAGIC = b"SMDISK1\n"
END = (1 << 64) - 1
CHUNK = 1 << 20
MAX_HEADER = 64 * 1024
MAX_SIZE = 1 << 44  # 16 TiB: larger than any sliver disk
_EXTENT = struct.Struct(">QQ")


class TransferError(Exception):
    pass


@dataclass(frozen=True)
class Sent:
    bytes: int  # on the wire
    data: int  # extent bytes (not holes)
    seconds: float


def extents(fd: int, size: int) -> list[tuple[int, int]]:
    """(offset, length) of every data extent of an open file, in order."""
    out: list[tuple[int, int]] = []
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # nothing but holes from here
                break
            raise
        end = os.lseek(fd, start, os.SEEK_HOLE)
        out.append((start, end - start))
        pos = end
    return out


def send_file(endpoint: str, token: str, path: Path, meta: dict[str, Any], timeout: float, what: str = "disk") -> Sent:
    """Send ``path`` with ``meta`` to the receiver at ``host:port``; raises TransferError (with
    the receiver's reason when it gave one)."""
    host, _, port = endpoint.rpartition(":")
    started = time.monotonic()
    wire = data = 0
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f, socket.create_connection((host, int(port)), timeout=timeout) as sock:
            size = os.fstat(f.fileno()).st_size
            header = json.dumps({"size": size, "meta": meta}).encode()
            sock.sendall(MAGIC + token.encode() + struct.pack(">I", len(header)) + header)
            wire += len(MAGIC) + len(token) + 4 + len(header)
            for offset, length in extents(f.fileno(), size):
                head = _EXTENT.pack(offset, length)
                digest.update(head)
                sock.sendall(head)
                wire += len(head)
                left = length
                while left:
                    chunk = os.pread(f.fileno(), min(CHUNK, left), offset + length - left)
                    if not chunk:
                        raise TransferError(f"{path} shrank while it was sent")
                    digest.update(chunk)
                    sock.sendall(chunk)
                    left -= len(chunk)
                data += length
                wire += length
                faults.hit("agent.move.mid_send")
            sock.sendall(_EXTENT.pack(END, 0) + digest.digest())
            wire += _EXTENT.size + 32
            sock.shutdown(socket.SHUT_WR)
            answer = _read_line(sock, timeout)
    except OSError as exc:
        raise TransferError(f"sending the {what} to {endpoint}: {exc}") from None
    if answer != "ok":
        raise TransferError(f"the receiver refused the {what}: {answer or 'no answer'}")
    return Sent(wire, data, time.monotonic() - started)


def _read_line(sock: socket.socket, timeout: float) -> str:
    sock.settimeout(timeout)
    buf = b""
    while b"\n" not in buf and len(buf) < 1024:
        part = sock.recv(1024)
        if not part:
            break
        buf += part
    return buf.split(b"\n", 1)[0].decode(errors="replace")


def _exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        part = sock.recv(min(CHUNK, n - len(buf)))
        if not part:
            raise TransferError("the stream was cut")
        buf += part
    return bytes(buf)


def _refuse(conn: socket.socket, answer: str, drain: float = 2.0) -> None:
    """Say why, then read what the sender still sends until it stops (briefly): closing with
    unread data would reset the connection and lose the answer on its way."""
    with contextlib.suppress(OSError):
        conn.sendall(answer.encode())
        conn.shutdown(socket.SHUT_WR)
        conn.settimeout(drain)
        deadline = time.monotonic() + drain
        while time.monotonic() < deadline and conn.recv(CHUNK):
            pass


class Receiver:
    """Waits for one verified disk image on a TCP port of its own (``port``)."""

    def __init__(self, token: str, bind: str = "0.0.0.0", what: str = "disk", *, durable: bool = True) -> None:
        self.token = token
        self.what = what  # what arrives, for errors: a disk image, a code bundle
        self.durable = durable  # fsync before the rename (a bundle is hashed again before use: no need)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((bind, 0))
        self.sock.listen(4)
        self.port: int = self.sock.getsockname()[1]
        self.received = 0  # bytes on the wire so far

    def close(self) -> None:
        """Stop listening; a ``receive`` blocked in another thread returns (shutdown wakes
        its accept, where close alone would not)."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self.sock.close()

    def receive(self, dest: Path, deadline: float, connect_by: float | None = None) -> dict[str, Any]:
        """Accept senders until one with the right token delivers a verified image to
        ``dest`` (written beside it, renamed when verified); its ``meta``. Raises
        TransferError at ``deadline`` (or at ``connect_by`` if no sender has connected by
        then) or when the one rightful stream is bad."""
        while True:
            left = (deadline if connect_by is None else min(deadline, connect_by)) - time.monotonic()
            if left <= 0:
                raise TransferError(f"no {self.what} arrived in time")
            self.sock.settimeout(left)
            try:
                conn, peer = self.sock.accept()
            except TimeoutError:
                raise TransferError(f"no {self.what} arrived in time") from None
            except OSError as exc:
                raise TransferError(f"receiving: {exc}") from None
            with conn:
                conn.settimeout(max(1.0, deadline - time.monotonic()))
                try:
                    head = _exact(conn, len(MAGIC) + 32)
                except (TransferError, OSError):
                    continue
                if head[: len(MAGIC)] != MAGIC or not hmac.compare_digest(head[len(MAGIC) :], self.token.encode()):
                    continue  # not the sender of this move: keep waiting for it
                try:
                    meta = self._body(conn, dest)
                except (TransferError, OSError, ValueError) as exc:
                    _refuse(conn, f"bad: {exc}\n")
                    raise TransferError(f"the {self.what} from {peer[0]} was not received: {exc}") from None
                conn.sendall(b"ok\n")
                return meta

    def _body(self, conn: socket.socket, dest: Path) -> dict[str, Any]:
        (length,) = struct.unpack(">I", _exact(conn, 4))
        if length > MAX_HEADER:
            raise TransferError(f"header of {length} bytes")
        header = json.loads(_exact(conn, length))
        size = header.get("size")
        if not isinstance(size, int) or not 0 <= size <= MAX_SIZE or not isinstance(header.get("meta"), dict):
            raise TransferError("malformed header")
        part = dest.with_name(dest.name + ".part")
        digest = hashlib.sha256()
        try:
            fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.ftruncate(fd, size)
                while True:
                    head = _exact(conn, _EXTENT.size)
                    offset, n = _EXTENT.unpack(head)
                    if offset == END:
                        break
                    if offset + n > size:
                        raise TransferError(f"extent {offset}+{n} past the end ({size})")
                    digest.update(head)
                    left = n
                    while left:
                        chunk = conn.recv(min(CHUNK, left))
                        if not chunk:
                            raise TransferError("the stream was cut")
                        digest.update(chunk)
                        os.pwrite(fd, chunk, offset + n - left)
                        left -= len(chunk)
                        self.received += len(chunk)
                if not hmac.compare_digest(_exact(conn, 32), digest.digest()):
                    raise TransferError("digest mismatch: the image was altered or cut on the way")
                if self.durable:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(part, dest)
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        meta: dict[str, Any] = header["meta"]
        return meta
