"""A sparse disk image between two endpoints over loopback TCP: holes stay holes, the digest
catches a cut or altered stream, a wrong token is ignored, and nothing is left half-written."""

from __future__ import annotations

import hashlib
import os
import socket
import struct
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from node_agent.diskmove import _EXTENT, END, MAGIC, Receiver, TransferError, extents, send_file

pytestmark = pytest.mark.timeout(60)
TOKEN = "0123456789abcdef0123456789abcdef"
MiB = 1 << 20


def sparse_image(path: Path) -> bytes:
    """A 64 MiB file with data at 0, 10 MiB and the last 4 KiB; its full content's digest."""
    with open(path, "wb") as f:
        f.truncate(64 * MiB)
        f.write(os.urandom(300_000))
        f.seek(10 * MiB)
        f.write(b"x" * MiB)
        f.seek(64 * MiB - 4096)
        f.write(b"end!" * 1024)
    return hashlib.sha256(path.read_bytes()).digest()


def receive_in_thread(rx: Receiver, dest: Path, timeout: float = 20.0) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["meta"] = rx.receive(dest, time.monotonic() + timeout)
        except TransferError as exc:
            out["error"] = str(exc)

    t = threading.Thread(target=run)
    t.start()
    return t, out


def test_sparse_image_arrives_whole_with_its_holes(tmp_path: Path) -> None:
    src, dest = tmp_path / "src.img", tmp_path / "dest.img"
    want = sparse_image(src)
    rx = Receiver(TOKEN, "127.0.0.1")
    t, out = receive_in_thread(rx, dest)
    sent = send_file(f"127.0.0.1:{rx.port}", TOKEN, src, {"host_id": 7}, timeout=10)
    t.join(20)
    rx.close()
    assert out == {"meta": {"host_id": 7}}
    assert hashlib.sha256(dest.read_bytes()).digest() == want
    assert dest.stat().st_size == 64 * MiB
    assert os.stat(dest).st_blocks * 512 < 8 * MiB  # holes stayed holes
    assert MiB + 300_000 <= sent.data < 3 * MiB and sent.bytes < sent.data + 4096
    with open(dest, "rb") as f:
        assert extents(f.fileno(), 64 * MiB)[0][0] == 0


def test_wrong_token_is_ignored_and_the_right_sender_still_gets_through(tmp_path: Path) -> None:
    src, dest = tmp_path / "src.img", tmp_path / "dest.img"
    want = sparse_image(src)
    rx = Receiver(TOKEN, "127.0.0.1")
    t, out = receive_in_thread(rx, dest)
    with pytest.raises(TransferError):
        send_file(f"127.0.0.1:{rx.port}", "f" * 32, src, {}, timeout=5)
    assert not dest.exists()
    send_file(f"127.0.0.1:{rx.port}", TOKEN, src, {}, timeout=10)
    t.join(20)
    rx.close()
    assert "meta" in out and hashlib.sha256(dest.read_bytes()).digest() == want


def raw_stream(rx: Receiver, body: bytes) -> str:
    with socket.create_connection(("127.0.0.1", rx.port), timeout=5) as s:
        header = b'{"size": 8192, "meta": {}}'
        s.sendall(MAGIC + TOKEN.encode() + struct.pack(">I", len(header)) + header + body)
        s.shutdown(socket.SHUT_WR)  # the receiver may have answered and stopped reading already
        return s.recv(1024).decode()


@pytest.mark.parametrize(
    "body, why",
    [
        (_EXTENT.pack(0, 4096) + b"a" * 4096 + _EXTENT.pack(END, 0) + b"\0" * 32, "digest mismatch"),
        (_EXTENT.pack(0, 4096) + b"a" * 100, "cut"),
        (_EXTENT.pack(8000, 4096) + b"a" * 4096, "past the end"),
    ],
    ids=["altered", "cut", "out-of-bounds"],
)
def test_a_bad_stream_fails_the_receive_and_leaves_no_file(tmp_path: Path, body: bytes, why: str) -> None:
    dest = tmp_path / "dest.img"
    rx = Receiver(TOKEN, "127.0.0.1")
    t, out = receive_in_thread(rx, dest)
    answer = raw_stream(rx, body)
    t.join(20)
    rx.close()
    assert answer.startswith("bad:") and why in answer
    assert why in out["error"]
    assert list(tmp_path.iterdir()) == []


def test_nothing_arrives_by_the_deadline(tmp_path: Path) -> None:
    rx = Receiver(TOKEN, "127.0.0.1")
    with pytest.raises(TransferError, match="in time"):
        rx.receive(tmp_path / "d.img", time.monotonic() + 0.3)
    rx.close()
