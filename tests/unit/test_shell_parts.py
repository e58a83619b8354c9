"""The pure parts of ``exec`` and ``logs``: argument split, log lines and prefixes, input
feeding, runc's start failures, the relay of input, and the JSON error object."""

from __future__ import annotations

import json
import os
import threading
from typing import Any

import pytest

from controller.relay import Relay
from node_agent.backends.execio import EOT, ExecStdin, Terminal, feed, start_feeder, write_all
from node_agent.backends.runc.execstream import _HeldBack, runc_failure
from slices import cli
from slices.cli_shell import InputPump, split_exec_argv
from slices.codec import decode, encode
from slices.errors import SliceMeshError
from slices.logtext import Prefixer, last_lines, prefixes, whole_lines
from slices.protocol import ExecInput, ExecResize, NodeExec, NodeLogs, Ok

pytestmark = pytest.mark.timeout(30)


def test_exec_argv_splits_at_the_first_double_dash_only() -> None:
    assert split_exec_argv(["exec", "-i", "s", "--", "sh", "-c", "ls --all", "--"]) == (["exec", "-i", "s"], ["sh", "-c", "ls --all", "--"])
    assert split_exec_argv(["exec", "s", "--node", "n", "--"]) == (["exec", "s", "--node", "n"], [])
    assert split_exec_argv(["exec", "s"]) == (["exec", "s"], None)


@pytest.mark.parametrize(
    ("data", "n", "from_start", "want"),
    [
        (b"a\nb\nc\n", 2, False, b"b\nc\n"),
        (b"a\nb\nc", 2, False, b"b\nc"),  # a last line without its newline counts
        (b"a\nb\nc\n", 3, True, b"a\nb\nc\n"),
        (b"a\nb\nc\n", 3, False, None),  # "a" may be the end of a cut line: ask for more
        (b"a\nb\nc\n", 9, True, b"a\nb\nc\n"),
        (b"a\nb\n", 0, False, b""),
        (b"", 5, True, b""),
        (b"x\n\n\ny\n", 3, False, b"\n\ny\n"),  # empty lines are lines
    ],
)
def test_last_lines_counts_lines_not_bytes(data: bytes, n: int, from_start: bool, want: bytes | None) -> None:
    assert last_lines(data, n, from_start=from_start) == want


def test_whole_lines_drops_a_line_that_may_be_cut() -> None:
    assert whole_lines(b"ut\nb\n", from_start=False) == b"b\n"
    assert whole_lines(b"ut\nb\n", from_start=True) == b"ut\nb\n"
    assert whole_lines(b"no newline", from_start=False) == b""


def test_prefixer_puts_one_prefix_per_line_across_chunks() -> None:
    p = Prefixer(b"[n1] ")
    assert p.feed(b"one\ntw") == b"[n1] one\n"
    assert p.feed(b"o\nthree") == b"[n1] two\n"
    assert p.feed(b"\r\n") == b"[n1] three\r\n"
    assert p.feed(b"tail") == b""
    assert p.flush() == b"[n1] tail\n" and p.flush() == b""


def test_prefixes_name_the_node_and_the_sliver_where_a_node_holds_two() -> None:
    got = prefixes([("s1", "tokyo-1"), ("s2", "lyon-1"), ("s3", "lyon-1")])
    assert got == {"s1": b"[tokyo-1] ", "s2": b"[lyon-1/s2] ", "s3": b"[lyon-1/s3] "}


def test_feed_writes_input_then_closes_a_pipe_and_applies_resizes() -> None:
    r, w = os.pipe()
    stdin, sizes = ExecStdin(), []
    stdin.write(b"hello ")
    stdin.resize(50, 120)
    stdin.write(b"world")
    stdin.close()
    stdin.write(b"after the end")  # ignored: the command was told its input ended
    stdin.stop()
    closed = threading.Event()

    def end() -> None:
        os.close(w)
        closed.set()

    feed(stdin, lambda d: write_all(w, d), end, sizes.append)
    assert closed.is_set() and sizes == [Terminal(50, 120)]
    with os.fdopen(r, "rb") as f:
        assert f.read() == b"hello world"


def test_a_feeder_whose_command_is_gone_drains_until_stopped() -> None:
    r, w = os.pipe()
    os.close(r)  # the command closed its input
    stdin, ended = ExecStdin(), []
    t = start_feeder(stdin, lambda d: write_all(w, d), lambda: ended.append(True))
    stdin.write(b"x" * 100_000)  # EPIPE: no exception escapes, no end is sent to nobody
    stdin.close()
    stdin.stop()
    t.join(timeout=5)
    assert not t.is_alive() and ended == []
    os.close(w)
    assert EOT == b"\x04"


def test_runc_start_failures_are_told_from_exit_code_255() -> None:
    log = '{"level":"error","msg":"exec failed: unable to start container process: exec: \\"nosuch\\": executable file not found in $PATH","time":"t"}\n'
    failed = runc_failure(log)
    assert failed is not None and failed.exit_code == 127 and failed.reason == 'cannot run the command: "nosuch": executable file not found in $PATH'
    denied = runc_failure('{"level":"error","msg":"exec failed: unable to start container process: exec: \\"/etc\\": permission denied"}')
    assert denied is not None and denied.exit_code == 126
    assert runc_failure("") is None and runc_failure("not json\n") is None
    assert runc_failure('{"level":"warning","msg":"exec failed: x"}') is None


def test_output_that_could_be_runcs_error_is_held_until_it_cannot() -> None:
    h = _HeldBack("stderr")
    assert h.take("stdout", b"exec") == b"exec"  # another stream passes
    assert h.take("stderr", b"exec fa") == b""
    assert h.take("stderr", b"iled: no") == b"" and h.held == b"exec failed: no"
    h2 = _HeldBack("stderr")
    assert h2.take("stderr", b"exec fa") == b""
    assert h2.take("stderr", b"st\n") == b"exec fast\n"  # not runc's: released at once
    assert h2.take("stderr", b"exec failed: ") == b"exec failed: "  # decided once, for good


def test_input_pump_reads_stdin_until_its_end() -> None:
    r, w = os.pipe()
    pump = InputPump(r, None, r)
    os.write(w, b"abc")
    assert pump.fds() == [r]
    assert pump.ready(r, "req1") == [ExecInput(request="req1", data=b"abc")]
    os.close(w)
    assert pump.ready(r, "req1") == [ExecInput(request="req1", eof=True)]
    assert pump.fds() == []
    os.close(r)


def _relay() -> tuple[Relay, list[tuple[bytes, Any]]]:
    sent: list[tuple[bytes, Any]] = []
    relay = Relay(lambda peer, payload: sent.append((peer, decode(payload))) or True, "controller", lambda: 0.0)
    return relay, sent


def test_relay_passes_input_only_from_the_exec_sender_while_it_runs() -> None:
    relay, sent = _relay()
    relay.forward(b"alice", "c1", "n1", b"agent1", NodeExec("s1", ["cat"], 10, stdin=True), 20)
    relay_id = sent[-1][1].id
    relay.on_input(ExecInput(request="c1", data=b"hi"), b"alice")
    assert sent[-1][0] == b"agent1" and sent[-1][1].msg == ExecInput(request=relay_id, data=b"hi")
    n = len(sent)
    relay.on_input(ExecInput(request="c1", data=b"x"), b"mallory")  # another connection
    relay.on_input(ExecResize(request="c1", rows=5, cols=5), b"alice")  # no terminal asked for
    relay.on_input(ExecInput(request="c2", data=b"x"), b"alice")  # no such exec
    assert len(sent) == n
    relay.forward(b"alice", "c3", "n1", b"agent1", NodeLogs("s1", None, 10), 20)
    relay.on_input(ExecInput(request="c3", data=b"x"), b"alice")  # logs take no input
    assert len(sent) == n + 1


def test_relay_forgets_an_exec_once_answered() -> None:
    relay, sent = _relay()
    relay.forward(b"alice", "c1", "n1", b"agent1", NodeExec("s1", ["sh"], 10, tty=True), 20)
    env = sent[-1][1]
    relay.on_input(ExecResize(request="c1", rows=40, cols=100), b"alice")
    assert sent[-1][1].msg == ExecResize(request=env.id, rows=40, cols=100)
    reply = decode(encode(Ok({"exit_code": 0, "node": "n1", "sliver": "s1"}), id=env.id, sender="n1"))
    assert relay.on_reply(reply, b"agent1", "n1")
    n = len(sent)
    relay.on_input(ExecInput(request="c1", data=b"late"), b"alice")
    assert len(sent) == n and relay.by_client == {}


def test_json_error_object_and_exec_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    err = SliceMeshError("cannot run the command: nosuch", code="exec-failed", details={"exit_code": 127})
    assert cli._fail(err, True) == 127
    out, line = capsys.readouterr()
    assert json.loads(out) == {"error": {"code": "exec-failed", "message": "cannot run the command: nosuch", "details": {"exit_code": 127}}}
    assert line == "slicemesh: exec-failed: cannot run the command: nosuch\n"
    assert cli._fail(SliceMeshError("no", code="not-found", details={"exit_code": 127}), False) == 1  # only exec-failed carries one
    assert capsys.readouterr().out == ""


def test_a_terminal_process_is_the_slivers_own_sized_before_it_starts() -> None:
    from node_agent.backends.runc.execstream import terminal_process

    own = {"user": {"uid": 0, "gid": 0}, "args": ["sleep", "9"], "env": ["PATH=/bin"], "cwd": "/", "terminal": False, "capabilities": {"bounding": ["CAP_KILL"]}}
    got = terminal_process(own, ["sh"], Terminal(37, 101))
    assert got == {**own, "args": ["sh"], "env": ["PATH=/bin", "TERM=xterm"], "terminal": True, "consoleSize": {"height": 37, "width": 101}}
    assert terminal_process({**own, "env": ["TERM=vt100"]}, ["sh"], Terminal(1, 1))["env"] == ["TERM=vt100"]
    assert own["args"] == ["sleep", "9"]  # the sliver's spec is not changed
