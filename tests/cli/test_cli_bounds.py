"""Hostile input at the CLI, as a user types it: one line on stderr, at once, nothing sent.

Each case once ended in a Python traceback (OverflowError from msgpack, RecursionError from
the YAML composer), a silent wait for the whole timeout (a request over the 1 MiB frame cap),
an endless retry loop (a NaN timeout) or raw escape codes on the screen. Cases that must fail
before any controller is contacted point the CLI at a TCP listener that never answers and
check that nobody connected to it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest

from slices import identity
from slices.transport import new_keypair
from tests.cli.test_cli import ROOT, SLICEMESH, run, write
from tests.conftest import wait_for

pytestmark = pytest.mark.timeout(120)


class Silent:
    """A TCP port that accepts nothing: any connection shows up in its backlog."""

    def __init__(self, config: Path) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.setblocking(False)
        url = f"tcp://127.0.0.1:{self.sock.getsockname()[1]}"
        # An identity for it, so that only hostile input (never a missing key) keeps the CLI away.
        identity.write(identity.Identity("silent", url, new_keypair().public, new_keypair()))
        self.env = {**os.environ, "SLICEMESH_CONTROLLER": url, "SLICEMESH_CONFIG_DIR": str(config)}

    def contacted(self) -> bool:
        try:
            conn, _ = self.sock.accept()
        except BlockingIOError:
            return False
        conn.close()
        return True


@pytest.fixture
def silent(private_config: Path) -> Iterator[Silent]:
    s = Silent(private_config)
    try:
        yield s
    finally:
        s.sock.close()


def refused(silent: Silent, *args: str, stdin: str | None = None, code: int = 1) -> str:
    """Run the CLI with a long timeout; it must fail in seconds with one line and send nothing."""
    t0 = time.monotonic()
    r = run(*args, env=silent.env, stdin=stdin)
    took = time.monotonic() - t0
    assert r.returncode == code, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr and r.stdout == ""
    if code == 1:
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr[-2000:]
    assert r.stderr.isascii() or "\x1b" not in r.stderr
    assert took < 15, f"took {took:.1f} s"
    assert not silent.contacted(), "the controller was contacted"
    return r.stderr


SPEC = "name: x\ndescription: y\n"


def test_the_silent_port_does_notice_a_client(silent: Silent) -> None:
    """Without this, "not contacted" below would prove nothing."""
    assert run("list", "--timeout", "0.5", env=silent.env).returncode == 1
    wait_for(silent.contacted, what="a connection in the backlog")


@pytest.mark.parametrize(
    ("extra", "expect"),
    [
        ("resources: {bandwidth: 99999999999999999999Gbit}\n", "resources.bandwidth: must be at most 32Gbit"),
        ("resources: {memory: .inf}\n", "resources.memory: .inf is not a finite number"),
        (f"resources: {{cpu: {'9' * 400}}}\n", "resources.cpu: the number 9999"),
        ("env: {N: 18446744073709551617}\n", "env.N: 18446744073709551617 does not fit in 64 bits"),
        ("placement: {min_distance_km: .nan}\n", "placement.min_distance_km: .nan is not a finite number"),
        ("placement: {locations: [{near: {lat: .nan, lon: 2}, within_km: 50}]}\n", "placement.locations[0].near.lat: .nan is not a finite number"),
        ("description2: " + "[" * 100_000 + "]" * 100_000 + "\n", "nested more than 32 levels deep"),
        ('owner: alice\nimage: "busybox\\e[2J"\n', "image:"),
        ("command: " + "x" * 100_000 + "\n", "command: is 100007 bytes, more than the 4 KiB allowed"),
        ("env: {D: !!binary aGk=}\n", "env.D: !!binary is not accepted"),
        ("lifetime: 99999999999999999999d\n", "lifetime: must be at most 56d"),
    ],
)
def test_hostile_specs_fail_at_once_with_the_field(silent: Silent, tmp_path: Path, extra: str, expect: str) -> None:
    err = refused(silent, "create", write(tmp_path, SPEC + extra), "--timeout", "60")
    assert expect in err


def test_escape_codes_in_a_description_are_refused_and_not_echoed(silent: Silent, tmp_path: Path) -> None:
    err = refused(silent, "create", write(tmp_path, 'name: x\ndescription: "hi \\e]0;pwned\\a\\e[31m"\n'), "--timeout", "60")
    assert "description: contains U+001B" in err and "\x1b" not in err and "\x07" not in err


def test_a_50_mb_spec_is_refused_unread_naming_the_limit(silent: Silent, tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    with open(big, "w") as f:
        f.write(SPEC + "# " + "x" * (50 * 1024 * 1024) + "\n")
    assert "more than the 512 KiB a spec may be" in refused(silent, "create", str(big), "--timeout", "60")


def test_a_big_spec_on_stdin_is_refused(silent: Silent) -> None:
    assert "-: more than the 512 KiB" in refused(silent, "create", "-", "--timeout", "60", stdin=SPEC + "command: " + "x" * 2_000_000 + "\n")


def test_a_spec_that_is_not_text_is_refused(silent: Silent, tmp_path: Path) -> None:
    p = tmp_path / "bin.yaml"
    p.write_bytes(b"name: x\ndescription: \xff\xfe\n")
    assert "not UTF-8 text" in refused(silent, "create", str(p), "--timeout", "60")


def test_a_2_mb_exec_command_is_refused_before_sending(silent: Silent) -> None:
    args = ["x" * 100_000] * 12  # 1.2 MB: over the 1 MiB frame cap (one argument may hold 128 KiB)
    assert "more than the 128 KiB allowed" in refused(silent, "exec", "s", "--timeout", "60", "--", *args)


def test_renew_past_the_maximum_is_refused(silent: Silent) -> None:
    assert "--for: must be at most 56d" in refused(silent, "renew", "x", "--for", "99999999999999999999d", "--timeout", "60")


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (["list", "--timeout", "nan"], "must be between 0.1 and 3600"),
        (["list", "--timeout", "inf"], "must be between 0.1 and 3600"),
        (["list", "--timeout", "-1"], "must be between"),
        (["logs", "x", "--tail", str(10**30)], "must be between 0 and 100000"),
        (["exec", "--exec-timeout", "1e308", "x", "--", "true"], "must be between 1 and 3600"),
        (["top", "--interval", "nan"], "must be between"),
        (["show", "x" * 100_000], "is not a valid slice name"),
        (["logs", "x", "--node", "n\x1b[2J"], "is not a valid node name"),
        (["sim", "--nodes", "9" * 5000], "is not a whole number"),
        (["sim", "--port", "70000"], "must be between 0 and 65535"),
    ],
)
def test_bad_numbers_and_names_are_usage_errors(silent: Silent, args: list[str], expect: str) -> None:
    err = refused(silent, *args, code=2)
    assert expect in err and "\x1b" not in err and len(err) < 2000


@pytest.mark.parametrize("url", ["nonsense", "tcp://127.0.0.1:99999", "http://x:1", "tcp://h\x1b[2J:1"])
def test_a_bad_controller_url_is_one_line(silent: Silent, url: str) -> None:
    assert "is not a controller URL" in refused(silent, "list", "--controller", url)
    silent.env["SLICEMESH_CONTROLLER"] = url
    assert "is not a controller URL" in refused(silent, "list")


# ---- what nodes say reaches the screen escaped ---------------------------------------------


def test_names_and_places_with_escape_codes_from_agents_are_refused(tmp_path: Path) -> None:
    """A hostile (but accepted) agent registers a site and city full of escape codes: the
    controller refuses the registration naming the field, and no view ever holds them."""
    from slices.catalogue import builtin_catalogue
    from slices.simcluster import sim_nodes
    from tests.cli.test_cli import _trusted_keys

    nodes = sim_nodes(builtin_catalogue(), 2, "sim")
    for n in nodes:
        n["site"] = "evil\x1b]0;pwned\x07site"
        n["location"]["city"] = "City\x1b[2J\u202e"
    ready = tmp_path / "url"
    log = open(tmp_path / "controller.log", "wb")  # noqa: SIM115 - closed in finally
    cmd = [*SLICEMESH, "controller", "--listen", "tcp://127.0.0.1:*", "--db", str(tmp_path / "c.db"), "--keys-dir", str(tmp_path / "keys"), "--ready-file", str(ready)]
    ctl = subprocess.Popen(cmd, stderr=log, cwd=ROOT)
    agents = None
    try:
        wait_for(ready.exists, what="controller ready")
        url = ready.read_text().strip()
        env = {**os.environ, "SLICEMESH_CONTROLLER": url}
        assert run("login", "--identity", str(tmp_path / "keys" / "admin.identity.yaml"), env=env).returncode == 0
        keys = json.loads(_trusted_keys(tmp_path, env, nodes).read_text())
        from slices.codec import decode
        from slices.transport import ClientKeys, Dealer, Keypair

        d = Dealer(url, "hostile", ClientKeys(keys["server"], Keypair(*keys["agents"][nodes[0]["name"]])))
        try:  # the agent's own code would refuse to send it: pack it by hand, as an attacker would
            d.send(msgpack.packb({"v": "2.0", "type": "register", "id": "r1", "from": "x", "ts": 1.0, "body": {"node": nodes[0]}}, use_bin_type=True))
            assert d.wait(5)
            reply = decode(d.recv() or b"")
        finally:
            d.close()
        assert reply.type == "error" and reply.msg.code == "bad-request"  # type: ignore[attr-defined]
        assert reply.msg.reason.startswith("register.node.site: contains control characters")  # type: ignore[attr-defined]
        assert "register.node.site" in (tmp_path / "controller.log").read_text(), "logged with the peer"
        assert json.loads(run("nodes", "--json", env=env).stdout) == []
        for args in (["nodes"], ["sites"], ["list"]):
            r = run(*args, env=env)
            assert r.returncode == 0 and "\x1b" not in r.stdout, args
    finally:
        for p in (agents, ctl):
            if p is not None:
                p.terminate()
                p.wait(timeout=15)
        log.close()
