"""Slices' code bundles, by SHA-256, beside the controller's database (docs/code.md).

An upload arrives in chunks, each appended to ``partial/<digest>`` at the offset the store
says it has (a retried or resumed upload sends from there); when the last byte is in, the
file is hashed and, only if it is what its name says, renamed to ``blobs/<digest>``; a wrong
one is deleted and refused. Hashing is incremental (the hash of what is there so far is kept
in memory), so completing a bundle costs no second read, and after a restart a partial file
is hashed once when its upload resumes. A bundle no slice refers to is removed by ``collect``.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from slices.errors import SliceMeshError


class CodeRefused(SliceMeshError):
    code = "quota"


class ContentStore:
    def __init__(self, root: Path, max_bundle: int) -> None:
        self.partial, self.blobs = root / "partial", root / "blobs"
        self.partial.mkdir(parents=True, exist_ok=True)
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.max_bundle = max_bundle
        self._hashing: dict[str, tuple[int, hashlib._Hash]] = {}  # digest -> (bytes hashed, hash)
        self.bytes_read = 0  # sent to nodes, pulled or pushed (``ping`` says it)

    def has(self, digest: str) -> bool:
        return (self.blobs / digest).is_file()

    def size(self, digest: str) -> int:
        return (self.blobs / digest).stat().st_size

    def have(self, digest: str) -> int:
        """Bytes of the bundle held: all of it, or what an upload wrote so far."""
        if self.has(digest):
            return self.size(digest)
        try:
            return (self.partial / digest).stat().st_size
        except FileNotFoundError:
            return 0

    def put(self, digest: str, size: int, offset: int, data: bytes) -> int:
        """Write ``data`` at ``offset`` (which must be what the store has); bytes held now.
        A completed bundle is verified and kept, or deleted and refused."""
        if size > self.max_bundle:
            raise CodeRefused(f"a code bundle may be at most {self.max_bundle} bytes (controller setting code_max_bytes); this one is {size}")
        if self.has(digest):
            return self.size(digest)
        have = self.have(digest)
        if offset != have or offset + len(data) > size:
            return have  # out of order or past the end: the sender resumes from ``have``
        part = self.partial / digest
        with open(part, "ab") as f:
            f.write(data)
        hashed, h = self._hashing.get(digest, (0, hashlib.sha256()))
        if hashed != offset:  # after a restart: hash what is already there once
            h = hashlib.sha256()
            with open(part, "rb") as f:
                h.update(f.read(offset))
        h.update(data)
        have = offset + len(data)
        self._hashing[digest] = (have, h)
        if have < size:
            return have
        del self._hashing[digest]
        if h.hexdigest() != digest:
            part.unlink(missing_ok=True)
            raise SliceMeshError(f"the uploaded bundle's SHA-256 is {h.hexdigest()}, not {digest}: it was altered or cut on the way; upload it again", code="bad-request")
        os.replace(part, self.blobs / digest)
        return have

    def read(self, digest: str, offset: int, limit: int) -> tuple[bytes, int]:
        """Bytes ``offset``.. (at most ``limit``) of a complete bundle, and its size."""
        with open(self.blobs / digest, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            f.seek(offset)
            data = f.read(limit)
        self.bytes_read += len(data)
        return data, size

    def collect(self, referenced: set[str], now: float, grace: float = 3600.0) -> list[str]:
        """Remove the complete bundles no slice refers to (and none was uploaded within
        ``grace`` seconds: a create may be on its way); their digests."""
        gone = []
        for blob in self.blobs.iterdir():
            if blob.name not in referenced and now - blob.stat().st_mtime > grace:
                blob.unlink(missing_ok=True)
                gone.append(blob.name)
        return gone
