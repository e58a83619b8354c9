"""Fifty create/destroy cycles, then a shutdown, leave the host's cgroups, mounts, loops, links,
netns, user namespaces, rootfs mount points and processes as they were; so does an agent killed
with its warm slots ready."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from ctr_helpers import PREFIX, make_machine, spec

from node_agent.backends.base import BackendError
from node_agent.backends.execio import Terminal
from node_agent.backends.runc.backend import RuncBackend
from node_agent.backends.runc.rootfs import ROOTS_DIR
from node_agent.backends.runc.settings import RuncSettings
from node_agent.userns import USERNS_DIR
from slices.model import CodeRef
from tests.conftest import wait_for

pytestmark = pytest.mark.timeout(120)
NOTHING = {"mounts_ours": [], "loops_ours": [], "links_ours": [], "netns": [], "userns_pins": [], "roots": [], "procs": [], "forks": []}


def snapshot(state: Path) -> dict[str, list[str]]:
    """What this test's node owns, by name and path, but its cgroups (compared on their own).

    Host-wide counts are not compared: other test runs on the same machine make and remove
    mounts, loop devices and links at the same time. Everything a sliver or a warm slot makes
    carries the state directory in its path (mounts, loop backing files, processes) or the
    run's prefix in its name (links, netns), so a leak is still seen."""
    mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    loops = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout.splitlines()
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout.splitlines()
    netns = sorted(p.name for p in Path("/run/netns").iterdir()) if Path("/run/netns").exists() else []
    procs = []
    own = Path("/proc/self/comm").read_text()
    children = [int(c) for t in Path("/proc/self/task").iterdir() for c in (t / "children").read_text().split()]
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if str(state).encode() in (proc / "cmdline").read_bytes():
                    procs.append(proc.name)
            except OSError:
                pass
    return {
        "mounts_ours": [m for m in mounts if str(state) in m],
        "loops_ours": [x for x in loops if str(state) in x],
        "links_ours": [x for x in links if PREFIX[:5] in x and "-" not in x.split(":")[1]],
        "netns": [n for n in netns if n.startswith(PREFIX)],
        "userns_pins": sorted(p.name for p in USERNS_DIR.glob(f"{PREFIX}-*")),
        "roots": sorted(p.name for p in ROOTS_DIR.glob(f"{PREFIX}-*")),
        "procs": procs,
        "forks": [str(c) for c in children if _comm(c) == own],  # user namespaces' children, waiting or unreaped
    }


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text()
    except OSError:
        return ""


def leaves() -> list[str]:
    """Sliver cgroups left under the node's, in any hierarchy."""
    return sorted(str(p) for p in Path("/sys/fs/cgroup").glob(f"*/{PREFIX}/*/*") if p.is_dir())


def test_fifty_cycles_then_shutdown_leave_nothing(backend: RuncBackend) -> None:
    state = backend.state_dir.parent
    assert backend.machine.warmer.wait_idle(60)
    assert backend.slots.ready_count() == 2 and len(backend.supervisors.spare_pids) == 2, "warm slots are made"
    for i in range(50):
        sid = f"cycle{i}"
        assert backend.create(spec(sid, bandwidth=50_000_000)).state == "running"
        backend.destroy(sid)
    assert leaves() == []
    assert list(backend.slivers_dir.iterdir()) == []
    assert backend.machine.addresses.allocated() == {}
    backend.close()
    backend.machine.close()
    assert snapshot(state) == NOTHING
    assert list((backend.state_dir / "warm").iterdir()) == []


def test_a_create_that_fails_after_runc_was_started_leaves_nothing(backend: RuncBackend) -> None:
    """runc starts before the sliver's parts are made and waits at its config (a FIFO): a
    failure after that (here, its code bundle is not on the node) kills that runc, and
    nothing of the sliver is left: no runc or supervisor process, no FIFO, no container."""
    state = backend.state_dir.parent
    assert backend.machine.warmer.wait_idle(60)
    sup = backend.supervisors._spares[0]  # the one the create takes: ready, so runc starts early
    missing = CodeRef(digest="ab" * 32, size=10)
    with pytest.raises(BackendError, match="is not on this node"):
        backend.create(spec("early", code=missing))
    assert sup.returncode == 0, "the supervisor killed its waiting runc and ended by itself (not killed by the rollback)"
    assert backend.list() == [] and leaves() == []
    assert not backend.dirs.dir("early").exists()
    runc_list = subprocess.run(["runc", "--root", str(backend.runc_root), "list", "-q"], capture_output=True, text=True, check=True)
    assert runc_list.stdout.split() == []
    # the same node then starts slivers as before (the spare taken is replaced)
    assert backend.create(spec("after")).state == "running"
    backend.destroy("after")
    backend.close()
    backend.machine.close()
    wait_for(lambda: snapshot(state) == NOTHING, timeout=20, what="the failed start's runc and supervisor to be gone")


def test_a_create_that_fails_after_runc_got_its_config_leaves_nothing(backend: RuncBackend) -> None:
    """A failure once runc has its config (here the address pool's file cannot be written:
    a directory stands where it goes) takes the container down before its disk and network."""
    state = backend.state_dir.parent
    pool = backend.machine.addresses.path
    pool.unlink(missing_ok=True)
    (pool / "in-the-way").mkdir(parents=True)
    try:
        with pytest.raises(BackendError, match="create failed"):
            backend.create(spec("late"))
        assert backend.list() == [] and leaves() == []
        assert not backend.dirs.dir("late").exists()
        runc_list = subprocess.run(["runc", "--root", str(backend.runc_root), "list", "-q"], capture_output=True, text=True, check=True)
        assert runc_list.stdout.split() == []
        assert not [m for m in Path("/proc/self/mountinfo").read_text().splitlines() if str(backend.state_dir) in m and "/slivers/" in m]
    finally:
        (pool / "in-the-way").rmdir()
        pool.rmdir()
    backend.close()
    backend.machine.close()
    wait_for(lambda: snapshot(state) == NOTHING, timeout=20, what="the failed start's container, runc and supervisor to be gone")


def test_exec_on_a_terminal_never_reads_a_config_fifo(backend: RuncBackend) -> None:
    """A start cut short (the agent killed while runc waited) leaves config.json a FIFO:
    ``exec -t``, which reads the config for the process, refuses instead of blocking."""
    assert backend.create(spec("fifo")).state == "running"
    config = backend.dirs.dir("fifo") / "bundle" / "config.json"
    assert config.is_file(), "a started sliver's config is a file"
    config.unlink()
    os.mkfifo(config, 0o600)
    with pytest.raises(BackendError, match="has no container config"):
        list(backend.exec("fifo", ["true"], 5.0, tty=Terminal(24, 80)))
    backend.destroy("fifo")


AGENT = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from node_agent.backends.runc.backend import RuncBackend
    from node_agent.machine_resources import MachineResources
    state, images, prefix = sys.argv[1:4]
    m = MachineResources(Path(state) / "node", "n1", prefix=prefix, capacity_cpu=2.0, capacity_memory=2 << 30, images_dir=Path(images))
    b = RuncBackend(m, Path(state) / "runc")
    assert m.warmer.wait_idle(60)
    print(b.slots.ready_count(), len(m.net.spares._pairs), flush=True)
    sys.stdin.read()
    """
)


def test_an_agent_killed_with_warm_slots_leaves_nothing_after_the_next_start(images_dir: Path, state_root: Path) -> None:
    state = state_root / "killed-warm"
    root = Path(__file__).resolve().parents[3]
    agent = subprocess.Popen([sys.executable, "-c", AGENT, str(state), str(images_dir), PREFIX], stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=root, text=True)
    try:
        assert agent.stdout is not None
        assert json.loads("[" + agent.stdout.readline().replace(" ", ",") + "]") == [2, 2]
        assert snapshot(state)["mounts_ours"], "the slots' disks are mounted"
    finally:
        os.kill(agent.pid, signal.SIGKILL)
        agent.wait(timeout=10)
    machine = make_machine(state, images_dir)  # the next start sweeps what the killed one left
    backend = RuncBackend(machine, state / "runc", RuncSettings(warm_slots=0))
    backend.close()
    machine.forget()
    wait_for(lambda: snapshot(state) == NOTHING, timeout=20, what="the killed agent's slots, spares and supervisors to be gone")
