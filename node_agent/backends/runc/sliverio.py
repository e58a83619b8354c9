"""Processes and files around a container sliver: its supervisors, exec streams and logs.

Supervisors (``logpipe.py``) are started one ahead of need, so no sliver waits for a Python
interpreter to start; ``stream_command`` runs ``runc exec`` and yields its output as it comes;
``read_log`` reads the rotated output log by offset for ``slicemesh logs --follow``.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from node_agent.backends.runc import logpipe


def readline(stream: Any, timeout: float) -> bytes:
    with selectors.DefaultSelector() as sel:
        sel.register(stream, selectors.EVENT_READ)
        if not sel.select(timeout):
            return b""
    line: bytes = stream.readline()
    return line


class Supervisors:
    """Keeps one idle supervisor process ready; each sliver takes one, then a new spare starts."""

    def __init__(self, runtime: str, runc_root: Path, log_max_bytes: int) -> None:
        self.args = [sys.executable, "-I", "-S", logpipe.__file__, runtime, str(runc_root), str(log_max_bytes)]
        self._spare: subprocess.Popen[bytes] | None = self._spawn()

    def _spawn(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self.args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True, cwd="/")

    @property
    def spare_pid(self) -> int | None:
        return self._spare.pid if self._spare is not None else None

    def take(self) -> subprocess.Popen[bytes]:
        """The idle spare, or a new one if it died."""
        sup, self._spare = self._spare, None
        if sup is None or sup.poll() is not None:
            sup = self._spawn()
        return sup

    def refill(self) -> None:
        """Start the next spare after a create, off its critical path."""
        if self._spare is None or self._spare.poll() is not None:
            self._spare = self._spawn()

    @staticmethod
    def drop(sup: subprocess.Popen[bytes]) -> None:
        with contextlib.suppress(OSError, ValueError):
            if sup.stdin:
                sup.stdin.close()  # EOF before "go": the supervisor exits by itself
        with contextlib.suppress(subprocess.TimeoutExpired):
            sup.wait(timeout=2)

    def close(self) -> None:
        if self._spare is not None:
            self.drop(self._spare)
            self._spare = None


def stream_command(cmd: list[str], pid_file: Path, timeout: float) -> Iterator[tuple[str, bytes]]:
    """Yield ("stdout"|"stderr", chunk) as the command writes, then ("exit", b"<code>").

    At the deadline the process inside the container is killed by the pid runc wrote (runc
    does not forward SIGKILL) and the exit code is 124, as timeout(1) reports it.
    """
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    deadline = time.monotonic() + timeout
    timed_out = False
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ, "stdout")
        sel.register(proc.stderr, selectors.EVENT_READ, "stderr")
        while sel.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            for key, _ in sel.select(left):
                chunk = os.read(key.fd, 65536)
                if chunk:
                    yield str(key.data), chunk
                else:
                    sel.unregister(key.fileobj)
    if timed_out:
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)
        proc.kill()
    code = proc.wait()
    proc.stdout.close()
    proc.stderr.close()
    pid_file.unlink(missing_ok=True)
    if timed_out:
        yield "stderr", f"timed out after {timeout:g} s\n".encode()
        code = 124
    yield "exit", str(code).encode()


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


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        with contextlib.suppress(OSError), open(f"/proc/{pid}/stat", encoding="ascii") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                return True
        time.sleep(0.01)
    return False
