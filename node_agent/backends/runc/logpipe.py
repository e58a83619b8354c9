"""Per-sliver supervisor: starts the container, writes its output to a capped log, records its exit.

Why a separate process: a sliver must outlive the agent (restarts, crashes, upgrades), so
whatever holds the read end of the container's stdout/stderr and waits for its exit cannot be
the agent. This process runs in its own session, so it is not killed with the agent.

Sequence: the agent keeps idle supervisors started ahead of time (so interpreter start-up is
never on a sliver's critical path); each says ``ready`` once it is, and is handed a sliver by
``go <TAB> bundle <TAB> id <TAB> log <TAB> exit-file`` on its stdin; EOF instead means "not
needed" (rollback, agent gone) and it exits. It becomes a child subreaper and runs
``runc run -d`` with stdout/stderr on a pipe at once, while the agent is still making the
sliver's network and disk: runc waits at ``<bundle>/config.json``, a FIFO this process holds
open, until ``config <length>`` and that many bytes arrive on stdin, which it pipes to runc.
EOF before them means the agent gave up (its set-up failed, or it died): runc, which has made
nothing yet, is killed rather than left waiting. It answers ``ok`` or ``err <code>`` on its stdout,
then copies the pipe to ``<log>`` (rotated at ``max_bytes`` into ``<log>.1``; the copy loop of
node_agent/sliverlog.py, which a VM's console logger shares) until the container closes it;
the container's init is re-parented to it when runc exits, so it then ``wait``s for it and
writes the exit status to ``<exit file>`` as JSON. No thread is needed: when init dies its
pid namespace dies, which closes the pipe; when the pipe closes first, waiting for init is
exactly what is left to do.

Only ``os``, ``sys``, ``signal``, ``stat``, ``fcntl``, ``ctypes`` (for prctl) and ``sliverlog``, started with ``python -I -S``: ~10 ms,
all of it before ``ready``.

runc is started with ``posix_spawn`` (``clone(CLONE_VM | CLONE_VFORK)`` in glibc), not
``fork`` + ``exec``: measured here, a runc started by os.fork() + os.execvp() from this process
took ~4-5 ms longer to start a container than one started by posix_spawn (60 interleaved
runs: 52.0 vs 47.6 ms p50; the agent's own subprocess.run, also vfork-based: 46.2). fork
copies the interpreter's page tables and marks its memory copy-on-write, then the child runs
Python (after-fork hooks, dup2s, closerange, the PATH walk of execvp) before exec throws it
all away; posix_spawn does none of that. That was the supervisor's extra cost.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import signal
import stat
import sys

PR_SET_CHILD_SUBREAPER = 36
MAX_CONFIG = 1 << 20  # a config.json is a few KiB (env and command are capped at 4 KiB each)
PIPE_BUF_DEFAULT = 65536
F_SETPIPE_SZ = 1031


def _write_exit(path: str, key: str, value: int) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="ascii") as f:
        f.write(f'{{"{key}": {value:d}}}')  # JSON without importing json (start-up time)
    os.replace(tmp, path)


def _reap(init_pid: int, exit_path: str) -> None:
    """Wait for the re-parented container init; write how it ended."""
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return
        if pid == init_pid:
            if os.WIFSIGNALED(status):
                _write_exit(exit_path, "signal", os.WTERMSIG(status))
            else:
                _write_exit(exit_path, "code", os.waitstatus_to_exitcode(status))
            return


class _Agent:
    """The agent's side of stdin, read raw (a buffered reader would hide bytes from the
    next read)."""

    def __init__(self) -> None:
        self.buf = b""

    def _more(self) -> bool:
        """Read what the agent has sent next; False at EOF."""
        chunk = os.read(0, 65536)
        self.buf += chunk
        return bool(chunk)

    def take(self, n: int) -> bytes | None:
        """The next ``n`` bytes; None at EOF before them."""
        while len(self.buf) < n:
            if not self._more():
                return None
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def line(self) -> bytes | None:
        """The next line, without its newline; None at EOF before one."""
        while b"\n" not in self.buf:
            if not self._more():
                return None
        out, _, self.buf = self.buf.partition(b"\n")
        return out


def _config(agent: _Agent) -> bytes | None:
    """``config <length>`` and the config itself; None when the agent gave up first."""
    head = agent.line()
    if head is None or not head.startswith(b"config "):
        return None
    try:
        size = int(head[7:])
    except ValueError:
        return None
    return agent.take(size) if 0 <= size <= MAX_CONFIG else None


def main(argv: list[str]) -> int:
    runc, root, max_bytes = argv
    ctypes.CDLL(None).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    # Imported before "ready", not after the answer: an import right after "ok" took the CPU
    # the woken agent was queued on (its read of the answer 0.96 -> 0.3 ms p50, measured).
    # The project root, for the rotating copy a VM's console logger shares (-I leaves it off sys.path).
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
    from node_agent.sliverlog import copy_rotating

    os.write(1, b"ready\n")
    agent = _Agent()
    words = (agent.line() or b"").decode("utf-8", "replace").split("\t")
    if len(words) != 5 or words[0] != "go":
        return 0  # not needed after all (rollback, spare at shutdown, agent gone)
    bundle, cid, log_path, exit_path = words[1:]
    pid_file = os.path.join(bundle, "init.pid")
    # Held open for reading and writing: runc's open never blocks, and what is piped in stays
    # in the FIFO until runc reads it, whenever that is (or this process ends).
    try:
        fifo = os.open(os.path.join(bundle, "config.json"), os.O_RDWR | os.O_NONBLOCK | os.O_NOFOLLOW)
    except OSError:
        fifo = -1  # none there: runc reports it, like any bundle without a config
    rfd, wfd = os.pipe()
    devnull = os.open(os.devnull, os.O_RDONLY)
    cmd = [runc, "--root", root, "--log", os.path.join(bundle, "runc.log"), "--log-format", "json"]
    cmd += ["run", "-d", "--pid-file", pid_file, "-b", bundle, cid]
    # fds Python made are close-on-exec (PEP 446): runc gets only stdin, stdout and stderr
    stdio = [(os.POSIX_SPAWN_DUP2, devnull, 0), (os.POSIX_SPAWN_DUP2, wfd, 1), (os.POSIX_SPAWN_DUP2, wfd, 2)]
    try:
        pid = os.posix_spawnp(runc, cmd, os.environ, file_actions=stdio)
    except OSError as exc:  # told the way runc tells its own errors, so the agent reports it
        with open(os.path.join(bundle, "runc.log"), "a", encoding="utf-8") as log:
            name = runc.replace('"', "")
            log.write(f'{{"level": "error", "msg": "cannot start {name}: {exc.strerror}"}}\n')
        pid = 0
    config = _config(agent)
    if config is None:  # the agent gave up: runc waits at the FIFO, having made nothing
        if pid:
            os.kill(pid, signal.SIGKILL)
    elif fifo >= 0 and stat.S_ISFIFO(os.fstat(fifo).st_mode):  # (a file: runc reads that)
        # Room for all of it, so the write never waits for a runc that may have failed early.
        if len(config) > PIPE_BUF_DEFAULT:
            fcntl.fcntl(fifo, F_SETPIPE_SZ, len(config))
        os.write(fifo, config)
    os.close(wfd)
    os.close(devnull)
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) if pid else 127
    if fifo >= 0:
        os.close(fifo)
    if config is None:
        return 0  # nobody waits for an answer, and no container was made
    os.write(1, b"ok\n" if code == 0 else f"err {code}\n".encode())  # first: the agent waits on it
    os.close(1)
    os.close(0)
    init_pid = 0
    if code == 0:  # runc wrote it before it exited; raw bytes (a text open costs a codec import)
        fd = os.open(pid_file, os.O_RDONLY)
        init_pid = int(os.read(fd, 64).strip() or b"0")
        os.close(fd)
    copy_rotating(rfd, log_path, int(max_bytes))
    if init_pid:
        _reap(init_pid, exit_path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
