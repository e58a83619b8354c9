"""``runc exec`` as a stream: output as it comes, the user's input fed in, under a terminal if asked.

With a terminal (``exec -t``) the agent opens a pseudo-terminal on the host and runs
``runc exec --tty`` with its slave side as runc's stdio: runc finds a host console there,
makes the container's own terminal (devpts inside the sliver), copies between the two and
sizes the inner one from the outer, again on each SIGWINCH; the agent keeps the master side.
(``--console-socket`` would hand the inner master to the agent instead, but then runc no
longer waits for the command, and its exit code is lost.) The inner terminal must have its
size before the command starts (runc's first resize races with it: ``stty size`` saw 0 0
one time in three here), so the command is given as a whole process spec (``--process``,
the sliver's own with ``consoleSize``). Checked with runc 1.1.5.

runc's own failure to start the command (no such program) is told apart from the command's
exit code 255 by runc's JSON log: it becomes ``ExecFailed`` with the code a shell gives
(127 not found, 126 cannot run), and runc's stderr line is held back so it is not shown twice.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import selectors
import signal
import struct
import subprocess
import termios
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from node_agent.backends.base import ExecFailed
from node_agent.backends.execio import EOT, ExecStdin, Terminal, start_feeder, write_all

RUNC_FAILED = 255  # runc's exit code when it could not start the command
RUNC_PREFIX = b"exec failed: "
START_PREFIX = "exec failed: unable to start container process: "


def runc_failure(log_text: str) -> ExecFailed | None:
    """The error runc logged (JSON lines), if it failed to start the command; pure."""
    for line in reversed(log_text.splitlines()):
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            msg = entry.get("msg", "") if isinstance(entry, dict) else ""
            if entry.get("level") in ("error", "fatal") and msg.startswith("exec failed: "):
                why = msg.removeprefix(START_PREFIX).removeprefix("exec failed: ").removeprefix("exec: ")
                missing = "not found" in why or "no such file" in why
                return ExecFailed(f"cannot run the command: {why}", 127 if missing else 126)
    return None


def terminal_process(process: dict[str, Any], argv: list[str], size: Terminal) -> dict[str, Any]:
    """The sliver's OCI process (user, env, capabilities, limits as its command has them)
    running ``argv`` under a terminal of ``size``; ``TERM`` as docker gives one if unset."""
    env = list(process.get("env", []))
    if not any(e.startswith("TERM=") for e in env):
        env.append("TERM=xterm")
    return {**process, "args": argv, "env": env, "terminal": True, "consoleSize": {"height": size.rows, "width": size.cols}}


def set_size(fd: int, size: Terminal) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", size.rows, size.cols, 0, 0))


class _HeldBack:
    """Output that may be runc's own error line: held until it is clearly not, or the end."""

    def __init__(self, stream: str) -> None:
        self.stream = stream
        self.held = b""
        self.deciding = True

    def take(self, stream: str, chunk: bytes) -> bytes:
        if stream != self.stream or not self.deciding:
            return chunk
        self.held += chunk
        n = min(len(self.held), len(RUNC_PREFIX))
        if self.held[:n] == RUNC_PREFIX[:n]:
            return b""
        self.deciding = False
        out, self.held = self.held, b""
        return out


def stream_command(
    cmd: list[str], pid_file: Path, log_file: Path, timeout: float, stdin: ExecStdin | None = None, tty: Terminal | None = None, process_file: Path | None = None
) -> Iterator[tuple[str, bytes]]:
    """Yield ("stdout"|"stderr", chunk) as the command writes, then ("exit", b"<code>").

    At the deadline the process inside the container is killed by the pid runc wrote (runc
    does not forward SIGKILL) and the exit code is 124, as timeout(1) reports it. Under a
    terminal, everything the command writes comes as "stdout".
    """
    master = -1
    feeder_fd = -1
    if tty is not None:
        master, slave = os.openpty()
        set_size(master, tty)
        proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
        os.close(slave)
        outs = {master: "stdout"}
        feeder_fd = master
    else:
        r = -1
        if stdin is not None:
            r, feeder_fd = os.pipe()
        proc = subprocess.Popen(cmd, stdin=r if stdin is not None else subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if r >= 0:
            os.close(r)
        assert proc.stdout is not None and proc.stderr is not None
        outs = {proc.stdout.fileno(): "stdout", proc.stderr.fileno(): "stderr"}

    def resize(size: Terminal) -> None:
        set_size(master, size)
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGWINCH)  # runc sizes the inner terminal from the outer

    pipe_open = [feeder_fd >= 0 and tty is None]  # closed once, by whoever is first

    def close_pipe() -> None:
        if pipe_open[0]:
            pipe_open[0] = False
            os.close(feeder_fd)

    def end() -> None:
        if tty is not None:
            write_all(master, EOT)
        else:
            close_pipe()

    feeder = start_feeder(stdin, lambda data: write_all(feeder_fd, data), end, resize if tty is not None else None) if stdin is not None else None
    held = _HeldBack("stdout" if tty is not None else "stderr")
    deadline = time.monotonic() + timeout
    timed_out = False
    try:
        with selectors.DefaultSelector() as sel:
            for fd, name in outs.items():
                sel.register(fd, selectors.EVENT_READ, name)
            while sel.get_map():
                left = deadline - time.monotonic()
                if left <= 0:
                    timed_out = True
                    break
                for key, _ in sel.select(left):
                    try:
                        chunk = os.read(key.fd, 65536)
                    except OSError:  # EIO: the terminal's last holder closed it
                        chunk = b""
                    if not chunk:
                        sel.unregister(key.fileobj)
                    elif out := held.take(str(key.data), chunk):
                        yield str(key.data), out
        if timed_out:
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
            proc.kill()
        code = proc.wait()
    finally:
        if proc.returncode is None:  # the caller gave up on the stream
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
            proc.kill()
            proc.wait()
        if stdin is not None:
            stdin.stop()
        if feeder is not None:
            feeder.join(timeout=5)
        with contextlib.suppress(OSError):
            close_pipe()
        if master >= 0:
            os.close(master)
        for f in (proc.stdout, proc.stderr):
            if f is not None:
                f.close()
        pid_file.unlink(missing_ok=True)
        if process_file is not None:
            process_file.unlink(missing_ok=True)
    failed = runc_failure(log_file.read_text(errors="replace")) if code == RUNC_FAILED and log_file.exists() else None
    log_file.unlink(missing_ok=True)
    if failed is not None:
        raise failed
    if held.held:
        yield held.stream, held.held
    if timed_out:
        yield "stderr", f"timed out after {timeout:g} s\n".encode()
        code = 124
    yield "exit", str(code).encode()


__all__ = ["runc_failure", "set_size", "stream_command", "terminal_process"]
