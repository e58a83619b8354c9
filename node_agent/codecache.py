"""Code bundles on a node, by SHA-256: fetched in chunks, verified, unpacked once, shared by
every sliver that runs the same code, evicted least recently used (docs/code.md).

``trees/<digest>/`` is the unpacked, read-only tree a sliver sees at ``/code`` (``tree_of``),
``images/<digest>.img`` its ext4 image for VMs (``image_of``), ``partial/<digest>`` a bundle
still arriving, ``bundles/<digest>`` the verified bundle as it came (what this node sends a
peer that fetches it from here: the exact bytes, which a tree packed again might not be). Nothing is unpacked before the whole bundle's
digest matched: a corrupt or cut transfer is thrown away and fetched again, never started.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from slices import bundle


def tree_of(root: Path, digest: str) -> Path:
    """Where a bundle's unpacked tree is under a node's code directory (the backends mount it)."""
    return root / "trees" / digest


def image_of(root: Path, digest: str) -> Path:
    """Where a bundle's read-only ext4 image is, for VM slivers (codeimage.py makes it)."""
    return root / "images" / f"{digest}.img"


class CodeCache:
    """``root``: the node's code directory (``MachineResources.code_root``), or None for an
    agent without state (a simulated one): a temporary directory, made only if it ever
    receives a bundle."""

    def __init__(self, root: Path | None, max_bytes: int) -> None:
        self._root = root
        self.max_bytes = max_bytes
        #: digest -> bundle bytes of every tree held, for the size cap (read once at start)
        self.sizes: dict[str, int] = {}
        if root is not None and (root / "trees").is_dir():
            self.sizes = {p.name: _du(p) + _size(root / "bundles" / p.name) for p in (root / "trees").iterdir() if not p.name.startswith(".")}

    @property
    def root(self) -> Path:
        if self._root is None:
            self._root = Path(tempfile.mkdtemp(prefix="slicemesh-code-"))
        return self._root

    @property
    def trees(self) -> Path:
        return self.root / "trees"

    @property
    def partial(self) -> Path:
        path = self.root / "partial"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def tree(self, digest: str) -> Path | None:
        """The unpacked tree, if this node has it."""
        return tree_of(self.root, digest) if digest in self.sizes else None

    def bundle(self, digest: str) -> Path | None:
        """The verified bundle, if this node has it (to send to a peer)."""
        if digest not in self.sizes:
            return None
        path = self.root / "bundles" / digest
        return path if path.is_file() else None

    def held(self) -> list[str]:
        """Every bundle this node can send to a peer."""
        return [d for d in self.sizes if self.bundle(d) is not None]

    def used(self, digest: str) -> None:
        """A sliver uses this tree now: it is evicted last."""
        with contextlib.suppress(OSError):
            os.utime(tree_of(self.root, digest))

    def have(self, digest: str) -> int:
        if self._root is None:
            return 0
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
        self.trees.mkdir(parents=True, exist_ok=True)
        tmp = self.trees / f".{digest}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            bundle.unpack(data, tmp)
        except (bundle.BundleError, OSError) as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            part.unlink(missing_ok=True)
            return f"it does not unpack: {exc}"
        os.replace(tmp, tree_of(self.root, digest))
        (self.root / "bundles").mkdir(exist_ok=True)
        os.chmod(part, 0o444)
        os.replace(part, self.root / "bundles" / digest)
        self.sizes[digest] = 2 * len(data)  # the tree and the bundle it came as
        return None

    def evict(self, in_use: set[str]) -> list[str]:
        """Remove least recently used trees (and their VM images) no sliver here uses until
        under ``max_bytes``; nothing to look at while under it."""
        total = sum(self.sizes.values())
        if total <= self.max_bytes:
            return []
        gone = []
        for digest in sorted(self.sizes, key=lambda d: tree_of(self.root, d).stat().st_mtime):
            if total <= self.max_bytes:
                break
            if digest in in_use:
                continue
            total -= self.sizes.pop(digest)
            _remove_tree(tree_of(self.root, digest))
            image_of(self.root, digest).unlink(missing_ok=True)
            (self.root / "bundles" / digest).unlink(missing_ok=True)
            gone.append(digest)
        return gone


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def _remove_tree(path: Path) -> None:
    for top, dirs, _ in os.walk(path):
        for d in dirs:
            os.chmod(os.path.join(top, d), 0o755)
    os.chmod(path, 0o755)
    shutil.rmtree(path, ignore_errors=True)
