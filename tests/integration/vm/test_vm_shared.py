"""One VM, created by an agent process that is then killed with SIGKILL, re-adopted by a new
backend, and checked from every side (the node firewall included) before a graceful stop and a
destroy that leaves nothing; a container and a second VM backend on the same node beside it."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from vm_helpers import IMAGES, PREFIX, MiB, clean, gone, leftovers, make, make_machine, run_in, spec, wait_state

from node_agent import cgroups, firewall
from node_agent.backends.base import ExecUnsupported
from node_agent.backends.execio import ExecStdin, Terminal
from node_agent.backends.qemu import execclient, launcher
from node_agent.backends.qemu.backend import QemuBackend
from node_agent.backends.runc.backend import RuncBackend
from node_agent.backends.runc.settings import RuncSettings
from node_agent.machine_resources import MachineResources
from slices.waiting import wait_until
from tests.integration.realhost import sweep

pytestmark = pytest.mark.timeout(240)

AGENT = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from node_agent.backends.qemu.backend import QemuBackend
    from node_agent.backends.qemu.settings import QemuSettings
    from node_agent.machine_resources import MachineResources
    from slices.model import Resources, SliverSpec
    state, images, prefix = sys.argv[1:4]
    machine = MachineResources(Path(state) / "node", "n1", prefix=prefix, capacity_cpu=2.0, capacity_memory=2 << 30, images_dir=Path(images))
    b = QemuBackend(machine, Path(state) / "qemu", QemuSettings(accelerator="tcg"))
    b.create(SliverSpec(id="vm1", slice="web-slice", isolation="vm", image="busybox", resources=Resources(cpu=1.5, memory=128 << 20, disk=64 << 20),
                        command=("sh", "-c", "echo started $GREETING; exec sleep 100000"), env={"GREETING": "hello"}))
    print(json.dumps({"pid": b.pid("vm1")}), flush=True)
    time.sleep(1000)
    """
)


@pytest.fixture(scope="module")
def node(vm_root: Path) -> Iterator[tuple[QemuBackend, int, MachineResources, list[Any]]]:
    """(a backend that re-adopted vm1, the QEMU pid the killed agent saw, their node, the
    backends made on it: the first is the VM backend)."""
    state = vm_root / "shared"
    root = Path(__file__).resolve().parents[3]
    agent = subprocess.Popen([sys.executable, "-c", AGENT, str(state), str(IMAGES), PREFIX], stdout=subprocess.PIPE, cwd=root, text=True)
    try:
        assert agent.stdout is not None
        line = agent.stdout.readline()
    finally:
        agent.send_signal(signal.SIGKILL)
        agent.wait(timeout=10)
    backends: list[Any] = []
    machine = make_machine(state)
    try:
        assert line, "the agent process failed to create the VM"
        backends.append(make(state, machine))
        wait_state(backends[0], "vm1", "running")  # once: a VM that never boots fails every test at once
        yield backends[0], json.loads(line)["pid"], machine, backends
    finally:
        clean(backends, [machine])
        sweep(state, PREFIX)


@pytest.fixture
def vm(node: tuple[QemuBackend, int, MachineResources, list[Any]]) -> tuple[QemuBackend, int]:
    return node[0], node[1]


def test_readopted_after_the_agent_was_killed(vm: tuple[QemuBackend, int]) -> None:
    b, pid = vm
    assert pid and b.pid("vm1") == pid
    wait_state(b, "vm1", "running")
    assert b.pid("vm1") == pid
    assert [s.id for s in b.list()] == ["vm1"]
    assert launcher.logger_pid(b._paths("vm1")) is not None


def test_command_output_reaches_the_console_log(vm: tuple[QemuBackend, int]) -> None:
    b, _ = vm
    wait_state(b, "vm1", "running")
    log = wait_until(lambda: b"started hello" in (data := b.logs("vm1", 0, 1 << 20)[0]) and data, 30, "the command's output in the log")
    assert b"started hello\n" in log  # "\n", not "\r\n": the console tty does not translate
    tail, end = b.logs("vm1", None, 14)
    assert tail == b"started hello\n" and end == len(log)


def test_exec_keeps_stdout_stderr_and_exit_code_apart(vm: tuple[QemuBackend, int]) -> None:
    b, _ = vm
    wait_state(b, "vm1", "running")
    assert run_in(b, "vm1", "echo out; echo err >&2; exit 7") == (7, "out\n", "err\n")
    code, _, err = run_in(b, "vm1", "exec no-such-command")
    assert code == 127 and "no-such-command" in err
    assert list(b.exec("vm1", ["sleep", "30"], 1.0))[-1] == ("exit", b"124")
    # streamed as it comes: the first line arrives well before the command ends
    seen: list[tuple[float, str]] = []
    start = time.monotonic()
    for kind, _chunk in b.exec("vm1", ["sh", "-c", "echo first; sleep 2; echo second"], 30):
        seen.append((time.monotonic() - start, kind))
    assert seen[0][1] == "stdout" and seen[-1][1] == "exit" and seen[-1][0] - seen[0][0] > 1.5
    assert run_in(b, "vm1", "echo $GREETING") == (0, "hello\n", "")


def test_execs_run_side_by_side_take_stdin_and_die_with_their_connection(vm: tuple[QemuBackend, int]) -> None:
    b, _ = vm
    wait_state(b, "vm1", "running")
    results: dict[int, tuple[int, str, str]] = {}

    def one(i: int) -> None:
        results[i] = run_in(b, "vm1", f"sleep 1; echo {i}")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(3)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == {i: (0, f"{i}\n", "") for i in range(3)}
    assert time.monotonic() - started < 3.0  # together, not one after another
    link = b._link("vm1")
    data = bytes(range(256)) * 300  # binary, several frames
    out = b"".join(c for k, c in execclient.run(link, ["cat"], 30, stdin=data) if k == "stdout")
    assert out == data
    # a connection that goes away takes its commands with it (like an ssh hang-up)
    stream = execclient.run(link, ["sh", "-c", "echo go; exec sleep 1234"], 30)
    assert next(stream) == ("stdout", b"go\n")
    b._links.drop("vm1")
    assert wait_until(lambda: "1234" not in run_in(b, "vm1", "ps")[1], 30, "the orphaned session to be killed")


def test_exec_streams_a_users_input_and_refuses_a_terminal(vm: tuple[QemuBackend, int]) -> None:
    """``slicemesh exec -i`` into a VM: input as it arrives (the command answers each line
    before the next is sent), then its end; ``-t`` refused in one clear line."""
    b, _ = vm
    wait_state(b, "vm1", "running")
    stdin = ExecStdin()
    stream = b.exec("vm1", ["sh", "-c", "while read x; do echo got:$x; done; echo end"], 30, stdin)
    stdin.write(b"one\n")
    assert next(stream) == ("stdout", b"got:one\n")
    stdin.write(b"two\n")
    assert next(stream) == ("stdout", b"got:two\n")
    stdin.close()
    rest = list(stream)
    assert b"".join(c for k, c in rest if k == "stdout") == b"end\n" and rest[-1] == ("exit", b"0")
    with pytest.raises(ExecUnsupported, match="not available in VM slivers"):
        b.exec("vm1", ["sh"], 30, ExecStdin(), Terminal(24, 80))


def test_guest_sees_its_resources_and_identity(vm: tuple[QemuBackend, int]) -> None:
    b, pid = vm
    wait_state(b, "vm1", "running")
    mem = b.guest_memory("vm1")
    # MemTotal is the RAM asked for less what the kernel keeps (its image, page tables, ...)
    assert 128 * MiB - 48 * MiB < mem["MemTotal"] <= 128 * MiB
    assert run_in(b, "vm1", "nproc")[1].strip() == "2"  # ceil(1.5)
    assert run_in(b, "vm1", "hostname")[1].strip() == "web-slice"
    address = b.address("vm1")
    assert f"inet {address}/" in run_in(b, "vm1", "ip -4 addr show eth0")[1]
    # QEMU runs in the sliver's cgroup, limited to RAM + overhead and 1.5 cores
    key = "vm1"
    mounts = cgroups.v1_mounts()
    if cgroups.detect() != "v2":
        mem_dir, cpu_dir = mounts["memory"] / b.cg.leaf(key), mounts["cpu"] / b.cg.leaf(key)
        assert str(pid) in (mem_dir / "cgroup.procs").read_text().split()
        assert int((mem_dir / "memory.limit_in_bytes").read_text()) == 128 * MiB + b.memory_overhead
        assert int((cpu_dir / "cpu.cfs_quota_us").read_text()) == 150_000
        assert int((cpu_dir / "cpu.shares").read_text()) == 1536  # the container formula
    usage = b.usage("vm1")
    assert usage.memory > 64 * MiB and usage.cpu_seconds > 0 and usage.pids >= 1


def test_the_vm_is_on_the_node_bridge(vm: tuple[QemuBackend, int]) -> None:
    b, _ = vm
    wait_state(b, "vm1", "running")
    code, out, _ = run_in(b, "vm1", f"ping -c 1 -W 5 {b.net.gateway}")
    assert code == 0, out
    # and the host (the bridge) reaches a server in the guest
    assert run_in(b, "vm1", "nc -l -p 7000 -e echo hi-from-guest </dev/null >/dev/null 2>&1 &")[0] == 0
    address = b.address("vm1")
    assert address is not None

    def fetch() -> bytes:
        try:
            with socket.create_connection((address, 7000), timeout=5) as s:
                return s.recv(100)
        except OSError:
            return b""

    assert wait_until(fetch, 30, "the guest's server") == b"hi-from-guest\n"
    rx, tx = b.net.counters("vm1")
    assert rx > 0 and tx > 0


def test_the_host_is_closed_to_the_vm_but_for_the_allowed_ports(vm: tuple[QemuBackend, int]) -> None:
    """The VM's TAP is a port of the node bridge, so the node's nftables table (firewall.py)
    confines it as it does a container: a host service listening on every address is refused
    at once; one listed in ``sliver_host_access`` is reachable on the gateway."""
    b, _ = vm
    wait_state(b, "vm1", "running")
    servers = [socket.create_server(("::", 0), family=socket.AF_INET6, dualstack_ipv6=True) for _ in range(2)]
    closed, opened = (s.getsockname()[1] for s in servers)
    stop = threading.Event()

    def serve(server: socket.socket) -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.sendall(b"welcome\n")

    threads = [threading.Thread(target=serve, args=(s,), daemon=True) for s in servers]
    for t in threads:
        t.start()
    gateway = b.net.gateway

    def probe(port: int) -> tuple[int, str, str, float]:
        started = time.monotonic()
        code, out, err = run_in(b, "vm1", f"nc -w 5 {gateway} {port} </dev/null")
        return code, out, err, time.monotonic() - started

    try:
        with socket.create_connection((gateway, closed), timeout=5) as c:  # open to the host itself
            assert c.recv(100) == b"welcome\n"
        code, out, err, took = probe(closed)
        assert code != 0 and out == "" and "refused" in err.lower(), err
        assert took < 4.0, "refused, not dropped: the guest does not wait for a timeout"
        firewall.install(b.net.bridge, gateway, firewall.parse_access([f"tcp/{opened}", "icmp/echo"]))
        assert probe(opened)[1] == "welcome\n"
        assert "refused" in probe(closed)[2].lower()
    finally:
        firewall.install(b.net.bridge, gateway, b.net.host_access)  # the node's own settings again
        stop.set()
        for t in threads:
            t.join(5)
        for server in servers:
            server.close()


def test_files_written_in_the_guest_live_on_the_sliver_disk(vm: tuple[QemuBackend, int]) -> None:
    b, _ = vm
    wait_state(b, "vm1", "running")
    assert run_in(b, "vm1", "echo kept > /root/note && sync")[0] == 0
    disk = b._dir("vm1") / "disk.img"
    out = subprocess.run(["debugfs", "-R", "cat /upper/root/note", str(disk)], capture_output=True, text=True)
    assert out.stdout == "kept\n"


def test_a_container_beside_the_vm_gets_its_own_address_and_they_reach_each_other(node: tuple[QemuBackend, int, MachineResources, list[Any]]) -> None:
    b, _, machine, backends = node
    wait_state(b, "vm1", "running")
    ctr = RuncBackend(machine, machine.state_dir.parent / "runc", RuncSettings(warm_slots=0))
    backends.append(ctr)
    ctr.create(spec("ct1", isolation="container", memory=64 * MiB, command=["sleep", "100000"]))
    vm_addr, ct_addr = b.address("vm1"), machine.addresses.get("ct1")
    assert vm_addr and ct_addr and vm_addr != ct_addr, "one pool for both kinds"
    assert machine.addresses.allocated() == {"vm1": vm_addr, "ct1": ct_addr}
    code, out, _ = run_in(b, "vm1", f"ping -c 1 -W 5 {ct_addr}")  # ICMP from the VM (a container has no CAP_NET_RAW)
    assert code == 0, out
    assert run_in(b, "vm1", "nc -l -p 7001 -e echo hi-from-vm </dev/null >/dev/null 2>&1 &")[0] == 0
    fetched = wait_until(lambda: "hi-from-vm" in (got := run_in(ctr, "ct1", f"nc -w 5 {vm_addr} 7001 </dev/null", timeout=30)[1]) and got, 30, "the VM's server, from the container")
    assert fetched == "hi-from-vm\n"
    ctr.destroy("ct1")
    assert machine.addresses.get("ct1") is None


def test_a_qemu_killed_for_memory_fails_with_the_reason_while_its_neighbour_runs_on(node: tuple[QemuBackend, int, MachineResources, list[Any]]) -> None:
    b, pid, machine, backends = node
    wait_state(b, "vm1", "running")
    # no room above guest RAM: QEMU's own memory goes over the cgroup limit while it boots
    tight = make(machine.state_dir.parent / "tight", machine, memory_overhead_mib=4)
    backends.append(tight)
    tight.create(spec("oom"))
    st = wait_state(tight, "oom", "failed")
    assert st.reason is not None and st.reason.startswith("oom-killed")
    assert b.status("vm1").state == "running" and b.pid("vm1") == pid
    assert run_in(b, "vm1", "echo still here") == (0, "still here\n", "")
    tight.stop("oom")  # the cgroup goes, the reason was kept
    assert tight.status("oom").state == "stopped" and tight._metas["oom"]["oom_kills"] >= 1
    tight.destroy("oom")
    assert leftovers(tight, "oom", []) == []


def test_graceful_stop_restart_then_destroy_leaves_nothing(vm: tuple[QemuBackend, int]) -> None:
    b, pid = vm
    wait_state(b, "vm1", "running")
    logger = launcher.logger_pid(b._paths("vm1"))
    assert logger is not None
    started = time.monotonic()
    assert b.stop("vm1").state == "stopped"
    assert time.monotonic() - started < b.stop_timeout  # the guest powered off, no quit or kill needed
    assert gone(pid) and gone(logger) and b.status("vm1").state == "stopped"
    assert '"stopping"' in (b._dir("vm1") / "events").read_text()
    # started again from the same disk: what the user wrote is still there
    b.start("vm1")
    wait_state(b, "vm1", "running")
    again, logger2 = b.pid("vm1"), launcher.logger_pid(b._paths("vm1"))
    assert again is not None and again != pid and logger2 is not None
    assert run_in(b, "vm1", "cat /root/note") == (0, "kept\n", "")
    tap = b._metas["vm1"]["tap"]
    b.destroy("vm1")
    b.destroy("vm1")  # idempotent
    assert leftovers(b, "vm1", [pid, logger, again, logger2]) == [] and not (Path("/sys/class/net") / tap).exists()
    assert b.status("vm1").state == "lost"
