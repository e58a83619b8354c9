"""QMP, QEMU's control socket, through the maintained ``qemu.qmp`` library.

The rest of the agent is synchronous (a poller loop and a backend worker thread), while
``qemu.qmp`` is asyncio: each call here runs its own short event loop (connect, commands,
disconnect), so no loop outlives a call and nothing else in the agent sees asyncio. A VM's
QMP socket takes one client at a time; the backend serializes calls per VM.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from qemu.qmp import QMPClient, QMPError

# qemu.qmp logs every failed connect at ERROR; a VM that is gone is an expected answer here.
logging.getLogger("qemu.qmp").setLevel(logging.CRITICAL)


class QmpError(Exception):
    pass


CONNECT_TRIES = 40  # a QMP socket takes one client at a time: a moment ago's may still be closing
T = TypeVar("T")


async def _connected(sock: Path) -> QMPClient:
    for attempt in range(CONNECT_TRIES):
        client = QMPClient("slicemesh")
        try:
            await client.connect(str(sock))
            return client
        except (QMPError, OSError):
            if attempt == CONNECT_TRIES - 1 or not sock.exists():
                raise
        await asyncio.sleep(0.05)
    raise AssertionError("not reached")


def session(sock: Path, body: Callable[[QMPClient], Awaitable[T]], timeout: float, what: str) -> T:
    """Run ``body`` over one QMP connection (several commands, or a long watch), within
    ``timeout``; its result, or QmpError."""

    async def go() -> T:
        client = await _connected(sock)
        try:
            return await body(client)
        finally:
            await client.disconnect()

    async def bounded() -> T:
        return await asyncio.wait_for(go(), timeout)

    try:
        return asyncio.run(bounded())
    except (QMPError, OSError, TimeoutError, EOFError) as exc:
        raise QmpError(f"QMP {what}: {type(exc).__name__}: {exc}") from None


def execute(sock: Path, commands: list[tuple[str, dict[str, Any] | None]], timeout: float) -> list[object]:
    """Run ``commands`` in order over one connection; their return values, or QmpError."""

    async def body(client: QMPClient) -> list[object]:
        return [await client.execute(name, args) for name, args in commands]

    return session(sock, body, timeout, ", ".join(c for c, _ in commands))


def status(sock: Path, timeout: float = 2.0) -> str:
    """QEMU's run state ("running", "paused", "shutdown" ...)."""
    result = execute(sock, [("query-status", None)], timeout)[0]
    assert isinstance(result, dict)
    return str(result.get("status"))
