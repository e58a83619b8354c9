"""Code bundles on a node, by SHA-256: fetched in chunks, verified, unpacked once, shared by
every sliver that runs the same code, evicted least recently used (docs/code.md).

``trees/<digest>/`` is the unpacked, read-only tree a sliver sees at ``/code``;
``partial/<digest>`` is a bundle still arriving. Nothing is unpacked before the whole bundle's
digest matched: a corrupt or cut transfer is thrown away and fetched again, never started.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from slices import bundle


class CodeCache:
    def __init__(self, root: Path, max_bytes: int) -> None:
        self.trees, self.partial = root / "trees", root / "partial"
        self.trees.mkdir(parents=True, exist_ok=True)
        self.partial.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.sizes: dict[str, int] = {}  # digest -> bundle bytes, for the size cap

    def tree(self, digest: str) -> Path | None:
        """The unpacked tree, if this node has it (and it counts as used now)."""
        path = self.trees / digest
        if not path.is_dir():
            return None
        os.utime(path)  # least recently used goes first
        return path

    def have(self, digest: str) -> int:
        try:
            return (self.partial / digest).stat().st_size
        except FileNotFoundError:
            return 0

    def write(self, digest: str, offset: int, data: bytes) -> int:
        """Append a chunk at ``offset`` (what the cache has); bytes held now."""
        have = self.have(digest)
        if offset != have:
            return have
        with open(self.partial / digest, "ab") as f:
            f.write(data)
        return have + len(data)

    def finish(self, digest: str) -> str | None:
        """Verify the arrived bundle and unpack it; None, or why it was thrown away."""
        part = self.partial / digest
        try:
            data = part.read_bytes()
        except OSError as exc:
            return f"the bundle is gone: {exc}"
        got = hashlib.sha256(data).hexdigest()
        if got != digest:
            part.unlink(missing_ok=True)
            return f"its SHA-256 is {got[:12]}, not {digest[:12]}: altered or cut on the way"
        tmp = self.trees / f".{digest}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            bundle.unpack(data, tmp)
        except (bundle.BundleError, OSError) as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            part.unlink(missing_ok=True)
            return f"it does not unpack: {exc}"
        os.replace(tmp, self.trees / digest)
        part.unlink(missing_ok=True)
        self.sizes[digest] = len(data)
        return None

    def evict(self, in_use: set[str]) -> list[str]:
        """Remove least recently used trees no sliver here uses until under ``max_bytes``."""
        trees = sorted((p for p in self.trees.iterdir() if not p.name.startswith(".")), key=lambda p: p.stat().st_mtime)
        total = sum(self.sizes.get(p.name, _du(p)) for p in trees)
        gone = []
        for p in trees:
            if total <= self.max_bytes:
                break
            if p.name in in_use:
                continue
            total -= self.sizes.pop(p.name, _du(p))
            _remove_tree(p)
            gone.append(p.name)
        return gone


def _du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def _remove_tree(path: Path) -> None:
    for top, dirs, _ in os.walk(path):
        for d in dirs:
            os.chmod(os.path.join(top, d), 0o755)
    os.chmod(path, 0o755)
    shutil.rmtree(path, ignore_errors=True)
