"""``slicemesh exec`` and ``slicemesh logs``: a shell into a sliver and its output.

``exec`` reads like ``kubectl exec``: options before the slice, the command after ``--``
passed untouched. ``-i`` streams this process's stdin to the command (its end closes the
command's stdin); ``-t`` runs it under a pseudo-terminal in the sliver with this terminal in
raw mode, its size sent at start and on every SIGWINCH. The command's exit code is ours; a
command that could not be started gives one ``slicemesh:`` line and 126/127, as a shell does.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import termios
import time
import tty
from collections.abc import Callable, Iterator
from typing import Any

from slices import cliinput, logtext
from slices.client import Client
from slices.errors import SliceMeshError
from slices.protocol import ExecInput, ExecResize, ExecSliver, Message, ShowSlice, SliverLogs
from slices.protocol.relay import MAX_INPUT_CHUNK, MAX_LOG_CHUNK

DEFAULT_TAIL_BYTES = 64 * 1024  # without --tail: the end of the output, as much as this
INTERACTIVE_TIMEOUT = 3600.0  # default --exec-timeout of -i and -t sessions (a person types)


def split_exec_argv(argv: list[str]) -> tuple[list[str], list[str] | None]:
    """``exec``'s own arguments and the command (everything after the first ``--``,
    untouched, so ``-- sh -c "ls --all"`` keeps its options); None when there is no ``--``."""
    if "--" not in argv:
        return argv, None
    i = argv.index("--")
    return argv[:i], argv[i + 1 :]


def terminal_size(fd: int) -> tuple[int, int]:
    """(rows, cols) of the terminal on ``fd``; 24 x 80 when it reports nothing usable."""
    try:
        size = os.get_terminal_size(fd)
    except OSError:
        return 24, 80
    return min(size.lines or 24, 10_000), min(size.columns or 80, 10_000)


class InputPump:
    """The descriptors ``Client.call`` watches besides the controller's socket during an exec:
    our stdin (``-i``) and a self-pipe that SIGWINCH writes to (``-t``); each readiness
    becomes the notices to send (input, its end, a new window size)."""

    def __init__(self, stdin_fd: int | None, winch_fd: int | None, size_fd: int) -> None:
        self.stdin_fd, self.winch_fd, self.size_fd = stdin_fd, winch_fd, size_fd

    def fds(self) -> list[int]:
        return [fd for fd in (self.stdin_fd, self.winch_fd) if fd is not None]

    def ready(self, fd: int, request: str) -> list[Message]:
        if fd == self.winch_fd:
            with contextlib.suppress(BlockingIOError):
                os.read(fd, 512)
            rows, cols = terminal_size(self.size_fd)
            return [ExecResize(request=request, rows=rows, cols=cols)]
        data = os.read(fd, MAX_INPUT_CHUNK)
        if not data:
            self.stdin_fd = None  # end of input: said once, then no longer watched
            return [ExecInput(request=request, eof=True)]
        return [ExecInput(request=request, data=data)]


@contextlib.contextmanager
def raw_terminal(fd: int) -> Iterator[None]:
    """This terminal in raw mode (keys go to the sliver's terminal as typed: Ctrl-C too),
    restored however the session ends."""
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


@contextlib.contextmanager
def winch_pipe() -> Iterator[int]:
    """A descriptor that becomes readable when the window changes size (SIGWINCH)."""
    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    old_handler = signal.signal(signal.SIGWINCH, lambda *_: None)
    old_fd = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
    try:
        yield r
    finally:
        signal.set_wakeup_fd(old_fd)
        signal.signal(signal.SIGWINCH, old_handler)
        os.close(r)
        os.close(w)


def cmd_exec(a: argparse.Namespace, client: Callable[[argparse.Namespace], Client]) -> int:
    if not a.argv:
        raise SliceMeshError("exec needs a command after --, e.g. slicemesh exec SLICE -- hostname", code="usage")
    argv = cliinput.exec_argv(a.argv)
    stdin_fd = sys.stdin.fileno()
    if a.tty and not os.isatty(stdin_fd):
        raise SliceMeshError("exec -t needs a terminal on stdin; to pipe input, use -i without -t", code="usage")
    timeout = a.exec_timeout if a.exec_timeout is not None else (INTERACTIVE_TIMEOUT if a.stdin or a.tty else 60.0)
    rows, cols = terminal_size(stdin_fd) if a.tty else (24, 80)
    msg = ExecSliver(slice=a.slice, argv=argv, node=a.node, sliver=a.sliver, timeout=timeout, stdin=a.stdin or a.tty, tty=a.tty, rows=rows, cols=cols)

    def out(stream: str, data: bytes) -> None:
        target = sys.stderr.buffer if stream == "stderr" else sys.stdout.buffer
        target.write(data)
        target.flush()

    with contextlib.ExitStack() as stack:
        c = stack.enter_context(client(a))
        winch = stack.enter_context(winch_pipe()) if a.tty else None
        if a.tty:
            stack.enter_context(raw_terminal(stdin_fd))
        pump = InputPump(stdin_fd if a.stdin or a.tty else None, winch, stdin_fd)
        r = c.call(msg, timeout=timeout + 15, retry=False, on_output=out, inputs=pump)
    return int(r.exit_code)


# ---- logs -----------------------------------------------------------------------------------


def _targets(a: argparse.Namespace, c: Client) -> list[tuple[str | None, str | None]]:
    """(sliver, node) to read: the one asked for, or every sliver of the slice."""
    if a.node is not None or a.sliver is not None:
        return [(a.sliver, a.node)]
    view = c.call(ShowSlice(name=a.slice, rows="arrays"))
    if not view.slivers:
        raise SliceMeshError(f"slice {a.slice!r} has no slivers", code="not-found")
    return [(s.id, s.node) for s in view.slivers]


def tail(c: Client, slice_name: str, sliver: str | None, node: str | None, lines: int | None) -> tuple[bytes, Any]:
    """The end of one sliver's output: ``lines`` lines (asking for more bytes while the range
    holds too few, up to the cap), or without ``lines`` the last 64 KiB; and the last reply."""
    limit = DEFAULT_TAIL_BYTES
    while True:
        r = c.call(SliverLogs(slice=slice_name, node=node, sliver=sliver, offset=None, limit=limit))
        from_start = r.offset - len(r.data) <= 0
        if lines is None:
            return r.data, r
        got = logtext.last_lines(r.data, lines, from_start=from_start)
        if got is not None:
            return got, r
        if limit >= MAX_LOG_CHUNK:  # the cap: as many whole lines as it holds
            return logtext.whole_lines(r.data, from_start=False), r
        limit = min(limit * 8, MAX_LOG_CHUNK)


def cmd_logs(a: argparse.Namespace, client: Callable[[argparse.Namespace], Client]) -> int:
    out = sys.stdout.buffer
    with client(a) as c:
        targets = _targets(a, c)
        prefixed = a.prefix or len(targets) > 1
        names = logtext.prefixes([(s or "", n or "") for s, n in targets])
        follow: list[tuple[str, logtext.Prefixer | None, int]] = []  # sliver, its prefixer, next offset
        for sliver, node in targets:
            data, r = tail(c, a.slice, sliver, node, a.tail)
            pre = logtext.Prefixer(names.get(r.sliver, f"[{r.node}] ".encode())) if prefixed else None
            out.write(pre.feed(data) + (b"" if a.follow else pre.flush()) if pre is not None else data)
            out.flush()
            follow.append((r.sliver, pre, r.offset))
        while a.follow:
            time.sleep(0.5)
            for i, (sliver, pre, offset) in enumerate(follow):
                r = c.call(SliverLogs(slice=a.slice, sliver=sliver, offset=offset, limit=256 * 1024))
                out.write(pre.feed(r.data) if pre is not None else r.data)
                follow[i] = (sliver, pre, r.offset)
            out.flush()
    return 0


def add_parsers(sub: Any, common: argparse.ArgumentParser, client: Callable[[argparse.Namespace], Client]) -> None:
    ex = sub.add_parser(
        "exec",
        parents=[common],
        help="run a command inside a sliver; exits with its exit code",
        usage="slicemesh exec [-i] [-t] [--node NODE | --sliver ID] [options] SLICE -- CMD ...",
        description="Run CMD in a sliver of SLICE (the slice's only sliver, or the one --node or --sliver names). Everything after -- is the command, untouched.",
    )
    ex.add_argument("slice", type=cliinput.slice_name)
    ex.add_argument("-i", "--stdin", action="store_true", help="pass this stdin to the command (its end closes the command's stdin)")
    ex.add_argument("-t", "--tty", action="store_true", help="run the command under a terminal (this one in raw mode, resized with it; your keys go to it, as with -i); container slivers only")
    where = ex.add_mutually_exclusive_group()
    where.add_argument("--node", type=cliinput.node_name, help="the slice's sliver on this node")
    where.add_argument("--sliver", type=cliinput.sliver_id, help="this sliver (an id from `slicemesh show`)")
    ex.add_argument("--exec-timeout", type=cliinput.seconds(1, 3600), default=None, help="seconds the command may run (default 60; 3600 with -i or -t)")
    ex.set_defaults(func=lambda a: cmd_exec(a, client), argv=None)

    lg = sub.add_parser("logs", parents=[common], help="a sliver's output (every sliver's, each line prefixed by its node)")
    lg.add_argument("slice", type=cliinput.slice_name)
    where = lg.add_mutually_exclusive_group()
    where.add_argument("--node", type=cliinput.node_name, help="only the slice's sliver on this node (default: every sliver)")
    where.add_argument("--sliver", type=cliinput.sliver_id, help="only this sliver")
    lg.add_argument("--follow", "-f", action="store_true", help="keep printing new output")
    lg.add_argument("--tail", type=cliinput.whole(0, 100_000), default=None, metavar="N", help="the last N lines of each sliver's output (default: its last 64 KiB; at most 512 KiB is read)")
    lg.add_argument("--prefix", action="store_true", help="put [node] before every line (the default when the slice has several slivers)")
    lg.set_defaults(func=lambda a: cmd_logs(a, client))


__all__ = ["InputPump", "add_parsers", "cmd_exec", "cmd_logs", "split_exec_argv", "tail", "terminal_size"]
