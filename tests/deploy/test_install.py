"""deploy/install.sh as an operator runs it: install, run, upgrade and remove, in a throwaway root.

Everything the installer writes (/opt, /etc, /var/lib, /usr/local) lands in overlays inside a
private mount namespace (tests/deploy/sandbox.py); afterwards the test checks this host did not
change. Python packages come from a wheelhouse downloaded once per run (PIP_NO_INDEX,
PIP_FIND_LINKS: the same way an operator installs a machine without PyPI); Debian packages are
never installed (--no-apt: make setup has installed them, or the installer says which are missing).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tomllib
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import wait_for
from tests.deploy.sandbox import OVERLAID, PATH, Sandbox

ROOT = Path(__file__).resolve().parents[2]
INSTALL = "deploy/install.sh"
ETC = "/etc/slicemesh"
STATE = "/var/lib/slicemesh"
VENV = "/opt/slicemesh/venv"
BIN = "/usr/local/bin/slicemesh"
UNITS = "/etc/systemd/system"
# What the installer would make on this host: each must exist after the test exactly when it did
# before. (Not a listing of /var/lib/slicemesh: other test runs use its images directory.)
HOST_PATHS = ("/opt/slicemesh", ETC, BIN, f"{UNITS}/slicemesh-controller.service", f"{UNITS}/slicemesh-agent.service", f"{STATE}/controller.db", f"{STATE}/agent")


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "needs root (a private mount namespace with overlays)"
    for tool in ("unshare", "nsenter", "setpriv", "dpkg-query", "python3"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


needs_a_sandbox = pytest.mark.skipif(_why_not() is not None, reason=_why_not() or "")


def host_state() -> dict[str, bool]:
    return {p: os.path.lexists(p) for p in HOST_PATHS}


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    before = host_state()
    box = Sandbox(tmp_path / "sandbox")
    try:
        yield box
    finally:
        box.close()
    assert host_state() == before, "the installer reached the real host"


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A copy of the checkout without its .venv: the test changes it to make an upgrade."""
    dest = tmp_path / "checkout"
    shutil.copytree(ROOT, dest, ignore=shutil.ignore_patterns(".venv", ".git", "__pycache__", "*.egg-info", ".*_cache", ".hypothesis", "build"))
    return dest


@pytest.fixture
def wheelhouse(tmp_path: Path) -> Path:
    """slicemesh's build and run dependencies as wheels (pip's cache makes this quick)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    wanted = [*project["build-system"]["requires"], "wheel", *project["project"]["dependencies"]]
    dest = tmp_path / "wheels"
    r = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "-d", str(dest), *wanted], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return dest


def operator_env(tmp_path: Path, wheels: Path | None = None) -> dict[str, str]:
    """A root shell's environment: no .venv on PATH, nothing of the test runner's Python."""
    for d in ("home", "tmp", "pipcache", "config"):
        (tmp_path / d).mkdir(exist_ok=True)
    env = {"PATH": PATH, "HOME": str(tmp_path / "home"), "TMPDIR": str(tmp_path / "tmp"), "LANG": "C.UTF-8", "SLICEMESH_CONFIG_DIR": str(tmp_path / "config")}
    env["SYSTEMD_OFFLINE"] = "1"  # systemctl edits only the sandbox's /etc, even on a host where systemd runs
    if wheels is not None:
        env |= {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheels), "PIP_CACHE_DIR": str(tmp_path / "pipcache")}
    return env


def ok(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode == 0, f"exit {r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}"
    return r.stdout


def one_line_error(r: subprocess.CompletedProcess[str], code: int, text: str) -> None:
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and text in lines[0], r.stderr


def free_port() -> int:
    """A fixed port, as an operator's config has: the admin's identity names it across restarts."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def files_under(root: Path) -> Iterator[Path]:
    for d, _, names in os.walk(root):
        for n in names:
            p = Path(d) / n
            if p.is_file() and not p.is_symlink():
                yield p


@pytest.mark.root
@needs_a_sandbox
@pytest.mark.timeout(240)
def test_install_run_upgrade_and_uninstall(sandbox: Sandbox, checkout: Path, wheelhouse: Path, tmp_path: Path) -> None:
    env = operator_env(tmp_path, wheelhouse)
    install = ["bash", str(checkout / INSTALL)]

    # What the old install.sh left: a copy of a checkout with its .venv in /opt/slicemesh.
    (sandbox.path("/opt/slicemesh/.venv")).mkdir(parents=True)
    (sandbox.path("/opt/slicemesh/pyproject.toml")).write_text("[project]\n")
    out = ok(sandbox.run([*install, "controller", "--no-apt"], env=env, timeout=180))
    assert "removed the old install in /opt/slicemesh" in out, out
    assert "systemd is not running here" in out and f"slicemesh controller --config {ETC}/controller.yaml" in out, out
    assert f"{STATE}/keys/controller.key" in out and "slicemesh login --identity" in out, out
    assert os.readlink(sandbox.path(BIN)) == f"{VENV}/bin/slicemesh"
    assert sandbox.path(f"{ETC}/controller.yaml").read_bytes() == (ROOT / "deploy/controller.yaml").read_bytes()
    unit = sandbox.path(f"{UNITS}/slicemesh-controller.service").read_text()
    assert f"ExecStart={VENV}/bin/slicemesh controller --config {ETC}/controller.yaml" in unit
    assert sandbox.path(STATE).is_dir() and "roles=controller\n" in sandbox.path("/opt/slicemesh/install.info").read_text()

    # Self-contained: a venv of its own, nothing pointing into the checkout (no editable install).
    assert sorted(os.listdir(sandbox.path("/opt/slicemesh"))) == ["doc", "install.info", "venv"]
    where = ok(sandbox.run([f"{VENV}/bin/python", "-c", "import slices, controller, node_agent; print(slices.__file__, controller.__file__, node_agent.__file__)"], env=env))
    assert all(p.startswith(f"{VENV}/lib/") for p in where.split()), where
    needles = [str(checkout).encode(), str(ROOT).encode()]
    leaks = [str(p) for p in files_under(sandbox.path(VENV)) if p.name.startswith("__editable__") or any(n in p.read_bytes() for n in needles)]
    assert leaks == [], f"the venv refers to the checkout: {leaks}"
    (dist,) = sandbox.path(VENV).glob("lib/python3*/site-packages/slicemesh-*.dist-info")
    assert '"editable": true' not in ((dist / "direct_url.json").read_text() if (dist / "direct_url.json").exists() else "")

    # The operator edits the config (a loopback address for this test); installing again keeps it.
    cfg = sandbox.path(f"{ETC}/controller.yaml")
    edited = re.sub(r"(?m)^listen: .*$", f"listen: tcp://127.0.0.1:{free_port()}   # edited by the operator", cfg.read_text())
    edited = re.sub(r"(?m)^# user_listen: .*$", f"user_listen: tcp://127.0.0.1:{free_port()}", edited)  # listen's next port may be taken here
    assert edited.count("127.0.0.1") == 2, edited
    cfg.write_text(edited)
    out = ok(sandbox.run([*install, "controller", "--no-apt"], env=env, timeout=120))
    assert f"kept {ETC}/controller.yaml" in out and cfg.read_text() == edited

    # The installed daemon, started by hand as the installer says; the operator logs in as its admin.
    ready = tmp_path / "ready"
    controller = sandbox.start([BIN, "controller", "--config", f"{ETC}/controller.yaml", "--ready-file", str(ready)], env=env, log=tmp_path / "controller.log")
    url = wait_for(lambda: ready.exists() and ready.read_text().strip(), timeout=30, what="the installed controller to listen")
    ok(sandbox.run(["slicemesh", "login", "--identity", f"{STATE}/keys/admin.identity.yaml"], env=env))
    me = json.loads(ok(sandbox.run(["slicemesh", "whoami", "--json"], env=env)))
    assert (me["principal"], me["role"], me["version"]) == ("user admin", "admin", "0.1.0")
    secret = sandbox.path(f"{STATE}/keys/controller.key_secret").read_bytes()

    # An agent on the same machine: its config from the template, not started, told how to enrol.
    out = ok(sandbox.run([*install, "agent", "--no-apt"], env=env, timeout=120))
    assert f"missing {ETC}/controller.key" in out and "slicemesh keys accept NODE" in out and "enrol_token" in out, out
    assert "systemd is not running" not in out, "the template's agent is not worth starting"
    assert sandbox.path(f"{ETC}/agent.yaml").stat().st_mode & 0o777 == 0o600
    agent_unit = sandbox.path(f"{UNITS}/slicemesh-agent.service").read_text()
    assert f"ExecStart={VENV}/bin/slicemesh agent --config {ETC}/agent.yaml" in agent_unit and "KillMode=process" in agent_unit
    assert "roles=agent controller\n" in sandbox.path("/opt/slicemesh/install.info").read_text()
    if shutil.which("systemd-analyze"):  # the units as systemd reads them (it also checks that ExecStart exists)
        ok(sandbox.run(["systemd-analyze", "verify", f"{UNITS}/slicemesh-controller.service", f"{UNITS}/slicemesh-agent.service"], env=env))
    else:
        warnings.warn("systemd-analyze is not installed: the units were not verified", stacklevel=1)

    # ... then does what it said: copies the key, writes agent.yaml, starts it, accepts its key.
    shutil.copy(sandbox.path(f"{STATE}/keys/controller.key"), sandbox.path(f"{ETC}/controller.key"))
    acfg = sandbox.path(f"{ETC}/agent.yaml")
    text = re.sub(r"(?m)^controller: .*$", f"controller: {url}", acfg.read_text())
    acfg.write_text(re.sub(r"(?m)^backends: .*$", "backends: {container: sim, vm: sim}", text))
    agent = sandbox.start([BIN, "agent", "--config", f"{ETC}/agent.yaml"], env=env, log=tmp_path / "agent.log")
    wait_for(lambda: "node1.princeton" in ok(sandbox.run(["slicemesh", "keys"], env=env)), timeout=30, what="the agent's key, pending")
    ok(sandbox.run(["slicemesh", "keys", "accept", "node1.princeton"], env=env))
    nodes = wait_for(lambda: json.loads(ok(sandbox.run(["slicemesh", "nodes", "--json"], env=env))), timeout=30, what="the agent to register")
    assert [(n["name"], n["state"]) for n in nodes] == [("node1.princeton", "up")]
    agent_secret = sandbox.path(f"{STATE}/agent/agent.key_secret").read_bytes()

    # Upgrade from a changed checkout while the controller runs: config and state stay, the new
    # code runs once the operator restarts the daemon (systemd would restart it itself).
    init = checkout / "slices/__init__.py"
    init.write_text(init.read_text().replace('__version__ = "0.1.0"', '__version__ = "0.1.0+upgraded"'))
    out = ok(sandbox.run([*install, "upgrade", "--no-apt"], env=env, timeout=120))
    assert f"kept {ETC}/controller.yaml" in out and f"kept {ETC}/agent.yaml" in out and f"kept {STATE}" in out, out
    pids = re.search(r"daemons started by hand run the old code until you restart them: pids ([\d ]+)", out)
    assert pids and sorted(map(int, pids.group(1).split())) == sorted([controller.pid, agent.pid]), out
    assert cfg.read_text() == edited and sandbox.path(f"{STATE}/keys/controller.key_secret").read_bytes() == secret
    assert sandbox.path(f"{STATE}/agent/agent.key_secret").read_bytes() == agent_secret
    sandbox.stop(agent)
    sandbox.stop(controller)
    ready.unlink()
    controller = sandbox.start([BIN, "controller", "--config", f"{ETC}/controller.yaml", "--ready-file", str(ready)], env=env, log=tmp_path / "controller2.log")
    wait_for(ready.exists, timeout=30, what="the upgraded controller to listen")
    me = json.loads(ok(sandbox.run(["slicemesh", "whoami", "--json"], env=env)))  # the same admin key: keys and database survived
    assert (me["principal"], me["version"]) == ("user admin", "0.1.0+upgraded")
    sandbox.stop(controller)

    # Uninstall keeps config and state and says so; --purge removes them too.
    out = ok(sandbox.run([*install, "uninstall"], env=env))
    for gone in ("/opt/slicemesh", BIN, f"{UNITS}/slicemesh-controller.service", f"{UNITS}/slicemesh-agent.service"):
        assert not os.path.lexists(sandbox.path(gone)), gone
    assert not list(sandbox.path(UNITS).glob("*.wants/slicemesh-*"))
    assert f"kept {ETC}" in out and f"kept {STATE}" in out and "--purge" in out, out
    assert cfg.read_text() == edited and sandbox.path(f"{STATE}/keys/controller.key_secret").read_bytes() == secret
    assert sandbox.path(f"{STATE}/agent/agent.key_secret").read_bytes() == agent_secret
    out = ok(sandbox.run([*install, "uninstall", "--purge"], env=env))
    assert f"removed {ETC}" in out and f"removed {STATE}" in out, out
    assert not sandbox.path(ETC).exists() and not sandbox.path(STATE).exists()


@pytest.mark.root
@needs_a_sandbox
@pytest.mark.timeout(60)
def test_bad_invocations_are_one_line_errors_that_change_nothing(sandbox: Sandbox, tmp_path: Path) -> None:
    env = operator_env(tmp_path)
    install = ["bash", str(ROOT / INSTALL)]
    one_line_error(sandbox.run([*install, "web"], env=env), 2, "unknown action 'web'")
    one_line_error(sandbox.run([*install, "uninstall", "--no-apt"], env=env), 2, "usage: install.sh")
    one_line_error(sandbox.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *install, "controller"], env=env), 1, "must run as root")
    one_line_error(sandbox.run([*install, "upgrade", "--no-apt"], env=env), 1, "slicemesh is not installed here")
    # A Python without python3-venv's ensurepip (hidden in the sandbox only).
    ensurepip = ok(sandbox.run(["python3", "-c", "import ensurepip, os; print(os.path.dirname(ensurepip.__file__))"], env=env)).strip()
    sandbox.must(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", ensurepip])
    one_line_error(sandbox.run([*install, "controller", "--no-apt"], env=env), 1, "install python3-venv")
    for p in ("/opt/slicemesh", ETC, BIN):
        assert not os.path.lexists(sandbox.path(p)), f"{p} was made by a failed install"
    # --purge while something (a sliver's disk) is mounted under the state directory: refused whole.
    sandbox.path(f"{STATE}/agent/disk").mkdir(parents=True, exist_ok=True)
    sandbox.path(ETC).mkdir()
    sandbox.must(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", f"{STATE}/agent/disk"])
    one_line_error(sandbox.run([*install, "uninstall", "--purge"], env=env), 1, "still has mounts below it")
    assert sandbox.path(ETC).is_dir() and sandbox.path(f"{STATE}/agent/disk").is_dir()


@pytest.mark.timeout(60)
def test_an_agent_needs_the_makefiles_debian_packages() -> None:
    """install.sh reads the agent's packages from the Makefile, so `make setup` and an operator's
    install cannot drift apart."""
    make = subprocess.run(["make", "-pn", "-f", "Makefile"], cwd=ROOT, capture_output=True, text=True, timeout=30)
    line = next(x for x in make.stdout.splitlines() if x.startswith("DEB_PACKAGES :="))
    agent = subprocess.run(["bash", INSTALL, "packages", "agent"], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert agent.returncode == 0 and agent.stdout.split() == line.split(":=")[1].split()
    controller = subprocess.run(["bash", INSTALL, "packages", "controller"], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert set(controller.stdout.split()) <= set(agent.stdout.split()) and "python3-venv" in controller.stdout.split()


@pytest.mark.timeout(10)
def test_overlays_cover_what_install_sh_writes() -> None:
    """Every absolute directory install.sh names as a destination is under a sandbox overlay."""
    text = (ROOT / INSTALL).read_text()
    dests = dict(re.findall(r"(?m)^(PREFIX|ETC|STATE|BIN|UNITS)=(\S+)$", text))
    assert set(dests) == {"PREFIX", "ETC", "STATE", "BIN", "UNITS"}
    for name, path in dests.items():
        assert any(path == d or path.startswith(d + "/") for d in OVERLAID), f"{name}={path} is not overlaid"
