"""``slicemesh exec`` and ``logs`` as a user types them, against ``slicemesh sim --backend real``
(two simulated machines, real container slivers): stdin piped with ``-i``, a terminal with
``-t`` (the test gives the CLI a pseudo-terminal of its own), exit codes, JSON errors, and
``logs --tail N`` lines with node prefixes.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import re
import select
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from ctr_helpers import PREFIX

from slices.simcluster import SimCluster
from tests.conftest import wait_for

pytestmark = pytest.mark.timeout(240)
ROOT = Path(__file__).resolve().parents[3]
SLICEMESH = [sys.executable, "-m", "slices.cli"]

SPEC = """
name: {name}
description: a shell test slice
command: [sh, -c, "for i in 1 2 3 4 5; do echo line$i; done; while true; do sleep 1; done"]
resources: {{cpu: 0.2, memory: 64Mi, disk: 64Mi}}
placement: {{count: {count}, distinct: none}}
"""


class Shell:
    """The cluster and the environment a user's CLI runs in (its identity, its controller)."""

    def __init__(self, sim: SimCluster, config: Path, tmp: Path) -> None:
        self.sim, self.tmp = sim, tmp
        self.env = {**os.environ, "SLICEMESH_CONFIG_DIR": str(config), "SLICEMESH_CONTROLLER": sim.user_url}

    def run(self, *args: str, stdin: bytes | None = None, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([*SLICEMESH, *args], input=stdin, capture_output=True, env=self.env, cwd=ROOT, timeout=timeout)

    def nodes_of(self, name: str) -> list[str]:
        shown = json.loads(self.run("show", name, "--json").stdout)
        return sorted(v["node"] for v in shown["slivers"])


@pytest.fixture(scope="module")
def shell(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shell]:
    tmp = tmp_path_factory.mktemp("shell")
    config = tmp / "config"
    with pytest.MonkeyPatch.context() as mp:  # the published identity goes to this test's config
        mp.setenv("SLICEMESH_CONFIG_DIR", str(config))
        sim = SimCluster(nodes=2, backend="real", prefix=PREFIX + "sh", heartbeat_period=0.3, state_dir=str(tmp / "sim"), publish_identity=True, first_subnet=random.randrange(2048, 4096))
        try:
            sim.start(timeout=60)
            sh = Shell(sim, config, tmp)
            for name, count in (("one", 1), ("two", 2)):
                spec = tmp / f"{name}.yaml"
                spec.write_text(SPEC.format(name=name, count=count))
                r = sh.run("create", str(spec), "--wait", "--wait-timeout", "60", timeout=90)
                assert r.returncode == 0, r.stderr.decode()
            yield sh
        finally:
            sim.stop()


def test_exec_i_pipes_stdin_and_its_end(shell: Shell) -> None:
    r = shell.run("exec", "-i", "one", "--", "cat", stdin=b"hi\n")
    assert (r.returncode, r.stdout, r.stderr) == (0, b"hi\n", b"")
    big = os.urandom(300_000)  # several input chunks; the command sees every byte, then the end
    r = shell.run("exec", "-i", "one", "--", "md5sum", stdin=big)
    assert r.returncode == 0, r.stderr
    import hashlib

    assert r.stdout.split()[0].decode() == hashlib.md5(big).hexdigest()
    r = shell.run("exec", "one", "--", "cat")  # without -i the command's stdin is empty
    assert (r.returncode, r.stdout) == (0, b"")


def test_exec_exit_codes_options_and_errors(shell: Shell) -> None:
    assert shell.run("exec", "one", "--", "sh", "-c", "exit 7").returncode == 7
    r = shell.run("exec", "one", "--timeout", "30", "--", "sh", "-c", 'echo "$@"', "x", "--node", "-i")  # after --: the command's
    assert (r.returncode, r.stdout) == (0, b"--node -i\n")

    r = shell.run("exec", "one", "--", "no-such-program")
    lines = r.stderr.decode().splitlines()
    assert r.returncode == 127 and r.stdout == b""
    assert len(lines) == 1 and lines[0].startswith("slicemesh: exec-failed: ") and "no-such-program" in lines[0], lines

    nodes = shell.nodes_of("two")
    r = shell.run("exec", "two", "--", "true")
    assert r.returncode == 1 and "ambiguous" in r.stderr.decode() and all(n in r.stderr.decode() for n in nodes)
    r = shell.run("exec", "--json", "two", "--", "true")
    err = json.loads(r.stdout)["error"]
    assert r.returncode == 1 and err["code"] == "ambiguous" and sorted(s["node"] for s in err["details"]["slivers"]) == nodes
    for node in nodes:
        r = shell.run("exec", "--node", node, "two", "--", "hostname")
        assert (r.returncode, r.stdout) == (0, b"two\n")

    r = shell.run("exec", "-t", "one", "--", "true")  # stdin is not a terminal here
    assert r.returncode == 1 and "needs a terminal" in r.stderr.decode()
    r = shell.run("exec", "one")
    assert r.returncode == 1 and "needs a command after --" in r.stderr.decode()


def test_json_errors_on_stdout_with_the_usual_exit_code(shell: Shell) -> None:
    r = shell.run("logs", "--json", "nosuch")
    assert r.returncode == 1 and json.loads(r.stdout)["error"]["code"] == "not-found"
    r = shell.run("show", "nosuch", "--json")
    assert r.returncode == 1 and json.loads(r.stdout) == {"error": {"code": "not-found", "message": json.loads(r.stdout)["error"]["message"], "details": None}}
    r = shell.run("create", "--json", "--wait-timeout", "soon", "x.yaml")
    assert r.returncode == 2 and json.loads(r.stdout)["error"]["code"] == "usage" and "--wait-timeout" in r.stderr.decode()
    r = shell.run("create", "--wait-timeout", "soon", "x.yaml")  # without --json: argparse's usual refusal
    assert r.returncode == 2 and r.stdout == b""


def test_logs_tail_counts_lines_and_prefixes_nodes(shell: Shell) -> None:
    wait_for(lambda: shell.run("logs", "one").stdout.endswith(b"line5\n"), timeout=20, what="output in the log")
    assert shell.run("logs", "one", "--tail", "2").stdout == b"line4\nline5\n"
    assert shell.run("logs", "one", "--tail", "0").stdout == b""
    assert shell.run("logs", "one", "--tail", "50").stdout == b"".join(b"line%d\n" % i for i in range(1, 6))
    node = shell.nodes_of("one")[0]
    assert shell.run("logs", "one", "--tail", "1", "--prefix").stdout == f"[{node}] line5\n".encode()

    nodes = shell.nodes_of("two")
    wait_for(lambda: shell.run("logs", "two", "--tail", "1").stdout.count(b"line5") == 2, timeout=20, what="both slivers' output")
    got = shell.run("logs", "two", "--tail", "1").stdout.decode().splitlines()
    assert sorted(got) == sorted(f"[{n}] line5" for n in nodes)
    alone = shell.run("logs", "two", "--node", nodes[0], "--tail", "2").stdout
    assert alone == b"line4\nline5\n"


def _read_until(fd: int, pattern: bytes, seen: bytearray, timeout: float = 30) -> None:
    """Until ``pattern`` is in the output. A line end may come as "\r\r\n" while runc is still
    setting up its terminals (output before runc clears ONLCR on one of them); it looks
    the same on a screen, so the match treats any run of CRs before LF as one."""
    deadline = time.monotonic() + timeout
    while re.search(pattern, re.sub(rb"\r+\n", b"\r\n", bytes(seen))) is None:
        left = deadline - time.monotonic()
        assert left > 0, f"no {pattern!r} in {bytes(seen)!r}"
        if select.select([fd], [], [], left)[0]:
            try:
                seen += os.read(fd, 4096)
            except OSError:  # EIO: the CLI is gone
                break
    assert re.search(pattern, re.sub(rb"\r+\n", b"\r\n", bytes(seen))) is not None, f"no {pattern!r} in {bytes(seen)!r}"


def test_exec_t_runs_under_a_terminal_of_our_size_and_follows_a_resize(shell: Shell) -> None:
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 37, 101, 0, 0))
    script = 'stty size; tty; read x; while [ "$(stty size)" = "37 101" ]; do sleep 0.1; done; stty size; echo "got:$x"; exit 3'
    proc = subprocess.Popen(
        [*SLICEMESH, "exec", "-t", "one", "--", "sh", "-c", script],
        stdin=slave, stdout=slave, stderr=slave, env=shell.env, cwd=ROOT, start_new_session=True,
        preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),  # our terminal, as a shell's would be
    )  # fmt: skip
    os.close(slave)
    seen = bytearray()
    try:
        _read_until(master, rb"37 101\r\n/dev/pts/\d+\r\n", seen)
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 120, 0, 0))  # the kernel sends the CLI SIGWINCH
        os.write(master, b"hello\r")  # raw here; the sliver's terminal turns Enter into a newline
        _read_until(master, rb"50 120\r\ngot:hello\r\n", seen)
        assert proc.wait(timeout=30) == 3
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)



UNSTARTABLE = """
name: {name}
description: a slice whose command cannot start
command: [/no/such/program]
restart: never
resources: {{cpu: 0.1, memory: 64Mi, disk: 64Mi}}
placement: {{count: 1}}
"""


def test_create_wait_exits_non_zero_when_the_slice_does_not_run(shell: Shell) -> None:
    spec = shell.tmp / "unstartable.yaml"
    spec.write_text(UNSTARTABLE.format(name="unstartable"))
    try:
        r = shell.run("create", str(spec), "--wait", "--wait-timeout", "60", "--json", timeout=90)
        assert r.returncode == 1, (r.stdout.decode()[-2000:], r.stderr.decode())
        shown = json.loads(r.stdout)
        assert shown["state"] == "failed" and [v["state"] for v in shown["slivers"]] == ["failed"], shown
        assert shown["slivers"][0]["reason"], "it says why"
        text = shell.run("create", str(spec), "--wait", "--wait-timeout", "60", timeout=90)  # exists: refused, non-zero too
        assert text.returncode == 1 and b"already exists" in text.stderr, text.stderr
    finally:
        shell.run("delete", "unstartable", "--wait")
