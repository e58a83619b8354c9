"""What a user sends to a running ``exec``: input, end of input and terminal sizes.

The agent's loop receives ``exec_input``/``exec_resize`` notices while the command runs on
its own thread inside a backend; an ``ExecStdin`` carries them across. The backend's feeder
thread (``feed``) writes the input to the command's stdin, its terminal or its VM, and
applies resizes, so a command that does not read never blocks the agent or the output stream.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass

EOT = b"\x04"  # a terminal's end of input (VEOF): what Ctrl-D sends


@dataclass(frozen=True)
class Terminal:
    """The size of the pseudo-terminal an ``exec -t`` command runs under."""

    rows: int
    cols: int


@dataclass(frozen=True)
class _Data:
    data: bytes


class _Eof:
    pass


class _Stop:
    pass


Event = _Data | _Eof | Terminal | _Stop


class ExecStdin:
    """Thread-safe: the agent's loop puts, the backend's feeder takes. After ``close`` more
    input is ignored (a late chunk must not reach a terminal that was told "end")."""

    def __init__(self) -> None:
        self._q: queue.Queue[Event] = queue.Queue()
        self._closed = False
        self._lock = threading.Lock()

    def write(self, data: bytes) -> None:
        with self._lock:
            if not self._closed and data:
                self._q.put(_Data(data))

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._q.put(_Eof())

    def resize(self, rows: int, cols: int) -> None:
        self._q.put(Terminal(rows, cols))

    def stop(self) -> None:
        """The command ended: the feeder returns (whatever input is still queued is dropped)."""
        self._q.put(_Stop())

    def get(self) -> Event:
        return self._q.get()


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def feed(stdin: ExecStdin, write: Callable[[bytes], None], end: Callable[[], None], on_resize: Callable[[Terminal], None] | None = None) -> None:
    """Until the command ends: ``write`` its input, ``end`` it once (close a pipe; ``EOT`` on a
    terminal; an empty STDIN frame to a VM) and apply resizes. A failed write means the
    command is gone or closed its input: the rest is drained, not written."""
    ended = False
    while True:
        ev = stdin.get()
        if isinstance(ev, _Stop):
            return
        try:
            if isinstance(ev, Terminal):
                if on_resize is not None:
                    on_resize(ev)
            elif isinstance(ev, _Data) and not ended:
                write(ev.data)
            elif isinstance(ev, _Eof) and not ended:
                ended = True
                end()
        except OSError:
            ended = True


def start_feeder(stdin: ExecStdin, write: Callable[[bytes], None], end: Callable[[], None], on_resize: Callable[[Terminal], None] | None = None) -> threading.Thread:
    t = threading.Thread(target=feed, args=(stdin, write, end, on_resize), name="exec-stdin", daemon=True)
    t.start()
    return t


__all__ = ["EOT", "ExecStdin", "Terminal", "feed", "start_feeder", "write_all"]
