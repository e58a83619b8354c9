"""A sliver's output log, whatever runs the sliver: written capped and rotated, read by offset.

Written by a process that outlives the agent (a container's supervisor, backends/runc/
logpipe.py; a VM's console logger, backends/qemu/consolelog.py): both copy a file descriptor
into ``<log>``, moving it to ``<log>.1`` when it reaches ``max_bytes``, so a sliver's output
never takes more than twice that. Read by the agent for ``slicemesh logs``, which sees the
two files as one stream of bytes.

Imports only ``os``: the writers run under ``python -I -S`` and start in ~10 ms.
"""

from __future__ import annotations

import os
from pathlib import Path


def copy_rotating(fd: int, log_path: str, max_bytes: int) -> None:
    """Copy ``fd`` to ``log_path`` until EOF, rotating into ``<log>.1`` at ``max_bytes``."""
    out = open(log_path, "ab", buffering=0)  # noqa: SIM115 - reopened on rotation
    size = out.tell()
    try:
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                return
            while chunk:
                room = max_bytes - size
                if room <= 0:
                    out.close()
                    os.replace(log_path, log_path + ".1")
                    out = open(log_path, "ab", buffering=0)  # noqa: SIM115
                    size, room = 0, max_bytes
                out.write(chunk[:room])
                size += min(room, len(chunk))
                chunk = chunk[room:]
    finally:
        out.close()


def read_log(log: Path, offset: int | None, limit: int) -> tuple[bytes, int]:
    """Bytes of ``<log>.1`` followed by ``<log>`` from ``offset`` (None: the last ``limit``).

    After a rotation an old offset points past the end; reading restarts at the current file.
    """
    parts = []
    for path in (log.with_name(log.name + ".1"), log):
        try:
            parts.append(path.read_bytes())
        except OSError:
            parts.append(b"")
    data = b"".join(parts)
    if offset is None:
        start = max(0, len(data) - limit)
    elif offset > len(data):
        start = len(parts[0])
    else:
        start = offset
    chunk = data[start : start + limit]
    return chunk, start + len(chunk)

