"""Processes and files around a container sliver: its supervisors, exec streams and logs.

Supervisors (``logpipe.py``) are started ahead of need, so no sliver waits for a Python
interpreter to start. (The output log they
write is read back by ``node_agent/sliverlog.py``, which a VM's console log shares.)
"""

from __future__ import annotations

import contextlib
import selectors
import shutil
import subprocess
import sys
import threading
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
    """Idle supervisors started ahead of need (a warmer job); each sliver takes one.

    The warmer's spares have said ``ready`` (their interpreter has started), so a sliver never
    waits for Python's start-up. When none is left (a burst of creates, during which the warmer
    keeps still), ``take`` starts two: one for this sliver, which gets ready while the sliver is
    prepared, and one with a head start for the next."""

    def __init__(self, runtime: str, runc_root: Path, log_max_bytes: int, start_timeout: float = 10.0) -> None:
        # its full path: posix_spawnp then execs it at once instead of walking PATH (a failed exec per entry)
        self.args = [sys.executable, "-I", "-S", logpipe.__file__, shutil.which(runtime) or runtime, str(runc_root), str(log_max_bytes)]
        self.start_timeout = start_timeout
        self.wanted = 0
        self._spares: list[subprocess.Popen[bytes]] = []
        self._said_ready: set[int] = set()  # pids whose "ready" line was read
        self._lock = threading.Lock()

    def _spawn(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self.args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True, cwd="/")

    def _await_ready(self, sup: subprocess.Popen[bytes]) -> None:
        if self.ready(sup):
            return
        assert sup.stdout is not None
        if readline(sup.stdout, self.start_timeout) != b"ready\n":
            self.drop(sup)
            raise OSError(f"a supervisor did not start within {self.start_timeout:g} s")
        with self._lock:
            self._said_ready.add(sup.pid)

    @property
    def spare_pids(self) -> list[int]:
        with self._lock:
            return [s.pid for s in self._spares]

    def fill_one(self) -> bool:
        """Warmer job: start one more while fewer than ``wanted`` are there. It joins the spares
        once ready, so only whoever takes a head-start spare ever reads its first line."""
        with self._lock:
            self._spares = [s for s in self._spares if s.poll() is None]
            if len(self._spares) >= self.wanted:
                return False
        sup = self._spawn()
        self._await_ready(sup)
        with self._lock:
            self._spares.append(sup)
        return True

    def take(self) -> subprocess.Popen[bytes]:
        """A spare (``start`` waits for it to be ready if it is not yet)."""
        with self._lock:
            while self._spares:
                sup = self._spares.pop(0)
                if sup.poll() is None:
                    return sup
        if self.wanted:
            head_start = self._spawn()
            with self._lock:
                self._spares.append(head_start)
        return self._spawn()

    def ready(self, sup: subprocess.Popen[bytes]) -> bool:
        """Whether ``sup`` has said ``ready`` (a warmer's spare), so ``go`` will not wait for it."""
        with self._lock:
            return sup.pid in self._said_ready

    def go(self, sup: subprocess.Popen[bytes], bundle: Path, cid: str, log: Path, exit_file: Path) -> None:
        """Hand ``sup`` its sliver: it starts runc now, which waits at its config (a FIFO in
        ``bundle``) for ``config``; ``answer`` says how the start went."""
        assert sup.stdin is not None
        self._await_ready(sup)
        with self._lock:
            self._said_ready.discard(sup.pid)
        sup.stdin.write("\t".join(["go", str(bundle), cid, str(log), str(exit_file)]).encode() + b"\n")
        sup.stdin.flush()

    def config(self, sup: subprocess.Popen[bytes], config: bytes) -> None:
        """The container's config.json, for the supervisor to pipe to the waiting runc."""
        assert sup.stdin is not None
        sup.stdin.write(b"config %d\n" % len(config) + config)
        sup.stdin.flush()

    def answer(self, sup: subprocess.Popen[bytes]) -> bytes:
        """``ok``, ``err <code>`` or b"" (no answer in time) from a supervisor told to ``go``."""
        assert sup.stdin is not None and sup.stdout is not None
        answer = readline(sup.stdout, self.start_timeout)
        sup.stdin.close()
        sup.stdout.close()
        return answer

    def drop(self, sup: subprocess.Popen[bytes]) -> None:
        """Let an unused supervisor go (rollback, shutdown)."""
        with self._lock:
            self._said_ready.discard(sup.pid)
        with contextlib.suppress(OSError, ValueError):
            if sup.stdin:
                sup.stdin.close()  # EOF before "go": the supervisor exits by itself
        try:
            sup.wait(timeout=2)
        except subprocess.TimeoutExpired:
            sup.kill()
            sup.wait()
        if sup.stdout:
            sup.stdout.close()

    def close(self) -> None:
        with self._lock:
            spares, self._spares = self._spares, []
        for sup in spares:
            self.drop(sup)
