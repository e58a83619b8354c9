"""A slice's code tree as a read-only ext4 image, for VM slivers (their /code is /dev/vdb).

Made once per bundle on a node (``codecache.image_of``, beside its tree) and
made the same way on every node: fixed UUID and hash seed (from the digest), a fixed file
system time, no journal, so that a live-migrated guest, whose page cache holds blocks of the
old node's image, finds the same layout and the same data blocks in the new node's. (The
inodes' change times still differ: mke2fs copies them from the unpacked tree, and nothing
reads them from a read-only mount that matters for the guest.)"""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

from node_agent.codecache import image_of, tree_of

MiB = 1 << 20


def _tree_bytes(tree: Path) -> int:
    return sum(p.lstat().st_size for p in tree.rglob("*"))


def ensure(root: Path, digest: str) -> Path:
    """The image of bundle ``digest``'s tree under the node's code directory ``root``, made
    if missing; raises OSError/RuntimeError."""
    tree, image = tree_of(root, digest), image_of(root, digest)
    if image.is_file():
        return image
    image.parent.mkdir(exist_ok=True)
    count = sum(1 for _ in tree.rglob("*"))
    size = max(8 * MiB, int(_tree_bytes(tree) * 1.3) + count * 8192 + 4 * MiB)
    tmp = image.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    with open(tmp, "wb") as f:
        f.truncate(size)
    fixed = str(uuid.UUID(digest[:32]))
    env = {**os.environ, "E2FSPROGS_FAKE_TIME": "1", "SOURCE_DATE_EPOCH": "1", "MKE2FS_DEVICE_SECTSIZE": "512"}
    proc = subprocess.run(
        ["mke2fs", "-q", "-F", "-t", "ext4", "-b", "4096", "-m", "0", "-L", "code", "-U", fixed, "-E", f"hash_seed={fixed},lazy_itable_init=0,lazy_journal_init=0", "-O", "^has_journal", "-d", str(tree), str(tmp)],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"mke2fs of the code image failed: {proc.stderr.strip()[-300:]}")
    os.replace(tmp, image)
    return image
