"""Host side of the VM backend without a VM: QEMU's command line, state mapping, exec demux."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from node_agent import sliverlog
from node_agent.backends.qemu import consolelog, execclient, launcher, vmstate
from node_agent.backends.qemu import protocol as p
from node_agent.backends.runc import oci

pytestmark = pytest.mark.timeout(30)


def cfg(**kw: object) -> launcher.VmConfig:
    base: dict[str, object] = dict(name="slicemesh-v1", kernel=Path("/k/vmlinuz"), initrd=Path("/s/initrd"), memory_mib=128, cpus=2,
                                   disk=Path("/s/disk.img"), events=Path("/s/events"), mac="52:54:00:01:02:03", tap="smt1t123")  # fmt: skip
    base.update(kw)
    return launcher.VmConfig(**base)  # type: ignore[arg-type]


def test_qemu_argv_is_a_microvm_with_the_sliver_devices() -> None:
    paths = launcher.RunPaths(Path("/run/x"))
    argv = launcher.qemu_argv(cfg(tsc_khz=2_000_000), paths)
    joined = " ".join(argv)
    assert argv[argv.index("-M") + 1] == "microvm,x-option-roms=off,rtc=on,isa-serial=on"
    assert argv[argv.index("-m") + 1] == "128M" and argv[argv.index("-smp") + 1] == "2"
    assert argv[argv.index("-accel") + 1] == "tcg,tb-size=32"
    for flag in ("-nodefaults", "-no-reboot", "-daemonize"):
        assert flag in argv
    assert "tap,id=net,ifname=smt1t123,script=no,downscript=no" in argv and "virtio-net-device,netdev=net,mac=52:54:00:01:02:03" in argv
    assert "user" not in joined.split("-netdev")[1].split()[0]  # never user-mode networking
    assert "file=/s/disk.img,format=raw" in joined and "virtio-blk-device,drive=disk" in argv
    assert "virtserialport,chardev=agent,name=org.slicemesh.agent.0" in argv
    assert f"unix:{paths.qmp},server=on,wait=off" in argv and argv[argv.index("-pidfile") + 1] == str(paths.pidfile)
    cmdline = argv[argv.index("-append") + 1]
    assert "tsc_early_khz=2000000" in cmdline and "console=ttyS0" in cmdline and "mitigations=off" in cmdline
    kvm = launcher.qemu_argv(cfg(accel="kvm", tsc_khz=2_000_000), paths)
    kvm_cmdline = kvm[kvm.index("-append") + 1]
    assert kvm[kvm.index("-accel") + 1] == "kvm" and "tsc_early_khz" not in kvm_cmdline and "mitigations" not in kvm_cmdline
    assert "-netdev" not in launcher.qemu_argv(cfg(tap=None), paths)


def test_run_paths_fit_a_unix_socket_and_macs_are_stable() -> None:
    deep = Path("/tmp") / ("d" * 200) / "slivers" / ("k" * 64)
    paths = launcher.RunPaths.for_sliver(deep)
    assert all(len(str(s)) < 100 for s in (paths.qmp, paths.agent, paths.console))
    assert launcher.mac_for("v1") == launcher.mac_for("v1") != launcher.mac_for("v2")
    assert launcher.mac_for("v1").startswith("52:54:00:") and len(launcher.mac_for("v1")) == 17


def test_events_and_states() -> None:
    ev = vmstate.parse_events('{"event": "running", "pid": 9}\nnot json\n{"event": "exit", "code": 3}\n{"event": "exi')
    assert ev == vmstate.GuestEvents(True, {"code": 3}, None)
    assert vmstate.vm_state(True, "running", 0, vmstate.GuestEvents()) == ("pending", "booting")
    assert vmstate.vm_state(True, "running", 0, vmstate.GuestEvents(running=True)) == ("running", None)
    assert vmstate.vm_state(False, "stopped", 1, ev) == ("stopped", None)
    assert vmstate.vm_state(False, "running", 0, ev) == ("failed", "exited with code 3")
    assert vmstate.vm_state(False, "running", 1, ev)[1].startswith("oom-killed")
    assert vmstate.vm_state(False, "running", 0, vmstate.GuestEvents(True, {"signal": 9})) == ("failed", "killed by signal 9")
    assert "boot failed: no disk" in str(vmstate.vm_state(False, "running", 0, vmstate.parse_events('{"event": "error", "reason": "no disk"}'))[1])
    assert vmstate.vm_state(False, "running", 0, vmstate.GuestEvents())[0] == "failed"


def test_a_guest_ends_as_a_container_does() -> None:
    """Exit code 0 or a power-off from inside is ``exited`` (restart policies read this), as
    ``map_state`` says of a container; anything else ``failed``."""
    clean = vmstate.GuestEvents(True, {"code": 0})
    assert vmstate.vm_state(False, "running", 0, clean) == ("exited", "exited with code 0") == oci.map_state("stopped", "running", 0, {"code": 0})
    assert vmstate.vm_state(False, "running", 0, vmstate.GuestEvents(True, {"code": 3})) == oci.map_state("stopped", "running", 0, {"code": 3})
    assert vmstate.vm_state(False, "running", 0, vmstate.GuestEvents(True, {"signal": 9})) == oci.map_state("stopped", "running", 0, {"signal": 9})
    off = vmstate.parse_events('{"event": "running", "pid": 9}\n{"event": "stopping", "why": "signal"}\n{"event": "exit", "signal": 15}\n')
    assert off.stopping == "signal"
    assert vmstate.vm_state(True, "running", 0, off) == ("pending", "shutting down")
    state, reason = vmstate.vm_state(False, "running", 0, off)
    assert state == "exited" and reason is not None and "powered off" in reason
    assert vmstate.vm_state(False, "running", 1, off)[0] == "failed"  # QEMU killed for memory meanwhile
    assert vmstate.vm_state(False, "stopped", 0, off) == ("stopped", None)  # the host's own stop


class FakeGuest:
    """A guest agent stand-in on a real unix socket: leftovers first, then scripted answers."""

    def __init__(self, path: Path, leftovers: bytes) -> None:
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(1)
        self.leftovers = leftovers
        self.signals: list[tuple[int, int]] = []
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        conn, _ = self.server.accept()
        conn.sendall(self.leftovers)
        dec = p.Decoder()
        while data := conn.recv(65536):
            for f in dec.feed(data):
                if f.type == p.T.HELLO:
                    conn.sendall(p.encode(p.Frame(p.T.HELLO_ACK, 0, f.payload)))
                elif f.type == p.T.EXEC:
                    threading.Thread(target=self.answer, args=(conn, f), daemon=True).start()
                elif f.type == p.T.SIGNAL:
                    self.signals.append((f.channel, int.from_bytes(f.payload, "big")))

    def answer(self, conn: socket.socket, f: p.Frame) -> None:
        word = f.payload[8:].split(b"\0")[0]
        if word == b"hang":
            return
        for i in range(3):
            conn.sendall(p.encode(p.Frame(p.T.STDOUT, f.channel, word + b"%d" % i)))
            time.sleep(0.05)
        conn.sendall(p.encode(p.Frame(p.T.STDERR, f.channel, b"e")) + p.encode(p.Frame(p.T.EXIT, f.channel, b"\0\0\0\x05")))


@pytest.fixture
def guest(tmp_path: Path) -> Iterator[tuple[FakeGuest, execclient.Link]]:
    stale = p.encode(p.Frame(p.T.STDOUT, 1, b"old output")) + p.encode(p.Frame(p.T.EXIT, 1, b"\0\0\0\0"))
    g = FakeGuest(tmp_path / "agent.sock", stale)
    link = execclient.Link(tmp_path / "agent.sock")
    yield g, link
    link.close()
    g.server.close()


def test_concurrent_execs_share_one_connection_and_skip_stale_frames(guest: tuple[FakeGuest, execclient.Link]) -> None:
    _, link = guest
    results: dict[str, list[tuple[str, bytes]]] = {}

    def run(word: str) -> None:
        results[word] = list(execclient.run(link, [word], 10))

    threads = [threading.Thread(target=run, args=(w,)) for w in ("a", "b", "c")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    for w in ("a", "b", "c"):
        assert results[w] == [("stdout", f"{w}{i}".encode()) for i in range(3)] + [("stderr", b"e"), ("exit", b"5")]


def test_deadline_kills_the_command_and_reports_124(guest: tuple[FakeGuest, execclient.Link], monkeypatch: pytest.MonkeyPatch) -> None:
    g, link = guest
    monkeypatch.setattr(execclient, "KILL_GRACE", 0.2)
    got = list(execclient.run(link, ["hang"], 0.5))
    assert got[-1] == ("exit", b"124") and b"timed out" in got[-2][1]
    assert g.signals and g.signals[0][1] == 9


def test_console_logger_rotates_at_its_cap(tmp_path: Path) -> None:
    sock_path, log = tmp_path / "console.sock", tmp_path / "console.log"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(sock_path))
    server.listen(1)
    logger = subprocess.Popen([sys.executable, "-I", "-S", consolelog.__file__, str(sock_path), str(log), "1000"])
    try:
        conn, _ = server.accept()
        conn.sendall(b"x" * 2500 + b"end\n")
        conn.close()  # QEMU exiting: the logger copies what is left and ends
        assert logger.wait(10) == 0
    finally:
        logger.kill()
        server.close()
    assert log.read_bytes().endswith(b"end\n") and (tmp_path / "console.log.1").stat().st_size == 1000
    assert sliverlog.read_log(log, 0, 10_000)[0] == b"x" * 1500 + b"end\n"
