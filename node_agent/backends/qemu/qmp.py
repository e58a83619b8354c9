"""QMP, QEMU's control socket, through the maintained ``qemu.qmp`` library.

The rest of the agent is synchronous (a poller loop and a backend worker thread), while
``qemu.qmp`` is asyncio: each call here runs its own short event loop (connect, commands,
disconnect), so no loop outlives a call and nothing else in the agent sees asyncio. A VM's
QMP socket takes one client at a time; the backend serializes calls per VM.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from qemu.qmp import QMPClient, QMPError

# qemu.qmp logs every failed connect at ERROR; a VM that is gone is an expected answer here.
logging.getLogger("qemu.qmp").setLevel(logging.CRITICAL)


class QmpError(Exception):
    pass


def execute(sock: Path, commands: list[tuple[str, dict[str, Any] | None]], timeout: float) -> list[object]:
    """Run ``commands`` in order over one connection; their return values, or QmpError."""

    async def go() -> list[object]:
        client = QMPClient("slicemesh")
        await client.connect(str(sock))
        try:
            return [await client.execute(name, args) for name, args in commands]
        finally:
            await client.disconnect()

    async def bounded() -> list[object]:
        return await asyncio.wait_for(go(), timeout)

    try:
        return asyncio.run(bounded())
    except (QMPError, OSError, TimeoutError, EOFError) as exc:
        raise QmpError(f"QMP {', '.join(c for c, _ in commands)}: {type(exc).__name__}: {exc}") from None


def status(sock: Path, timeout: float = 2.0) -> str:
    """QEMU's run state ("running", "paused", "shutdown" ...)."""
    result = execute(sock, [("query-status", None)], timeout)[0]
    assert isinstance(result, dict)
    return str(result.get("status"))
