"""Live migration of a real TCG guest between two nodes' VM backends on this host (each node
with its own bridge, subnet, cgroup and address pool), as the agents drive it: the target
waits with ``-incoming defer``, the source migrates RAM and disk to it through QMP.

The guest runs a counter; across the move it keeps counting (never resets), keeps its boot
id and its files, and answers on the target node's address."""

from __future__ import annotations

import contextlib
import dataclasses
import re
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from vm_helpers import PREFIX, clean, make, make_machine, run_in, spec, wait_state

from node_agent.backends.base import BackendError
from node_agent.backends.qemu import launcher
from node_agent.backends.qemu.backend import QemuBackend
from node_agent.machine_resources import MachineResources, sliver_key
from slices.migration import Migration, MoveOptions
from slices.model import SliverSpec
from slices.protocol import Peer
from slices.waiting import wait_until
from tests.integration.realhost import sweep

pytestmark = pytest.mark.timeout(600)
TOKEN = "a" * 32
# written whole, then renamed: a reader never sees the file truncated and not yet written
COUNTER = "i=0; while :; do i=$((i+1)); echo $i > /tmp/count.new; mv /tmp/count.new /tmp/count; sleep 0.1; done"


@pytest.fixture
def two_nodes(vm_root: Path, request: pytest.FixtureRequest) -> Iterator[tuple[QemuBackend, QemuBackend]]:
    state = vm_root / request.node.name[:40]
    machines: list[MachineResources] = []
    made: list[QemuBackend] = []
    try:
        for node in ("m1", "m2"):
            machines.append(make_machine(state / node, node=node))
            made.append(make(state / node / "b", machines[-1]))
        yield made[0], made[1]
    finally:
        for b, m in zip(made, machines, strict=False):
            clean([b], [m])
        sweep(state, PREFIX)


NBD_REP_ERR_TLS_REQD = 0x80000005


def nbd_reply_to_plaintext(host: str, port: int) -> int:
    """Ask an NBD server for the ``disk0`` export without TLS (NBD_OPT_GO, fixed newstyle, the
    protocol's own handshake); the type of its reply."""
    with socket.create_connection((host, port), timeout=10) as s:
        f = s.makefile("rb")
        assert f.read(16) == b"NBDMAGICIHAVEOPT"
        f.read(2)  # the server's handshake flags
        name = b"disk0"
        s.sendall(struct.pack(">I", 3) + b"IHAVEOPT" + struct.pack(">II", 7, 4 + len(name) + 2) + struct.pack(">I", len(name)) + name + struct.pack(">H", 0))
        magic, option, reply, _length = struct.unpack(">QIII", f.read(20))
        assert magic == 0x3E889045565A9 and option == 7, (hex(magic), option)
        return int(reply)


def count(backend: QemuBackend, sid: str) -> int:
    try:
        code, out, _ = run_in(backend, sid, "cat /tmp/count 2>/dev/null || echo 0")
    except BackendError as exc:
        # Seen once in CI (a moved guest's QEMU gone right after it took its new address):
        # say how it ended, from the backend's own record and the guest's console.
        console = backend.logs(sid, None, 2000)[0].decode(errors="replace")
        raise AssertionError(f"{exc}; status: {backend.status(sid)}; console ends:\n{console}") from exc
    assert code == 0
    return int(out.strip() or 0)


def counting(backend: QemuBackend, sid: str) -> SliverSpec:
    """A guest running the counter on ``backend``; its spec."""
    base = spec(sid, command=("/bin/sh", "-c", COUNTER))
    backend.create(base)
    wait_state(backend, sid, "running")
    return base


def test_a_running_guest_moves_and_keeps_counting(two_nodes: tuple[QemuBackend, QemuBackend]) -> None:
    src, dst = two_nodes
    sid = f"{PREFIX}-live"
    base = counting(src, sid)
    assert run_in(src, sid, "echo kept-on-disk-4f2a > /var/tmp/file && sync")[0] == 0
    boot_id = run_in(src, sid, "cat /proc/sys/kernel/random/boot_id")[1].strip()
    before = wait_until(lambda: (n := count(src, sid)) >= 3 and n, 60, "the counter to run")
    old_address = src.address(sid)

    incoming = dst.create(dataclasses.replace(base, migration=Migration(role="in", kind="live", token=TOKEN, peer="m1")))
    assert incoming.state == "pending" and incoming.migration is not None and incoming.migration.phase == "listening"
    port, disk_port = incoming.migration.port, incoming.migration.disk_port
    assert port > 0 and disk_port > 0
    # The target serves the guest's disk to holders of the move's token only: a plaintext
    # NBD client is told TLS is required, and a source with another token cannot start.
    assert nbd_reply_to_plaintext("127.0.0.1", disk_port) == NBD_REP_ERR_TLS_REQD
    key = dst._paths(sid).tls / "keys.psk"
    assert key.stat().st_mode & 0o777 == 0o600 and key.read_text() == f"slicemesh:{TOKEN}\n"
    out = dataclasses.replace(base, migration=Migration(role="out", kind="live", token=TOKEN, peer="m2", endpoint=f"127.0.0.1:{port}", disk_endpoint=f"127.0.0.1:{disk_port}", options=MoveOptions()))
    assert out.migration is not None
    with pytest.raises(BackendError):
        src.send(dataclasses.replace(out, migration=dataclasses.replace(out.migration, token="b" * 32)))
    assert src.status(sid).state == "running" and not src._paths(sid).tls.exists()

    rep = src.send(out)
    assert rep.phase == "sent" and rep.kind == "live"
    assert rep.total_ms > 0 and 0 < rep.downtime_ms < 10_000 and rep.ram_bytes > 0 and rep.passes >= 1
    assert src.status(sid).state == "stopped"  # paused there until destroyed

    arrived = wait_state(dst, sid, "running")
    assert arrived.migration is not None and arrived.migration.phase == "received", arrived
    # It takes this node's address once its agent answers (at once on a quiet host; on a busy
    # one the re-translating TCG guest may take longer, and each status check tries again).
    wait_until(lambda: dst.status(sid) and "readdress" not in dst.dirs.metas[sid], 120, "the guest to take its new address")
    after = count(dst, sid)
    assert after >= before  # never reset: it went on from where it was
    assert wait_until(lambda: count(dst, sid) > after, 60, "the counter to go on")
    assert run_in(dst, sid, "cat /proc/sys/kernel/random/boot_id")[1].strip() == boot_id
    # The disk came too (not only the guest's page cache): the bytes are in the new node's
    # image, and the guest reads them back from it after dropping its caches.
    assert b"kept-on-disk-4f2a" in (dst.slivers_dir / sliver_key(sid) / "disk.img").read_bytes()
    assert run_in(dst, sid, "sync; echo 3 > /proc/sys/vm/drop_caches; cat /var/tmp/file")[1].strip() == "kept-on-disk-4f2a"
    assert rep.disk_bytes > 0
    assert not key.exists() and not src._paths(sid).tls.exists(), "the move's key is forgotten on both nodes"
    new_address = dst.address(sid)
    assert new_address != old_address
    addrs = run_in(dst, sid, "ip -4 addr show dev eth0")[1]
    assert re.search(rf"inet {re.escape(str(new_address))}/", addrs), addrs
    assert re.search(rf"^{re.escape(str(new_address))}\s+{sid}\b", run_in(dst, sid, "cat /etc/hosts")[1], re.M)

    # The guest's /etc/hosts follows its slice's peers, as a container's does.
    dst.machine.set_slices([Peer(sliver="peer-1", slice=base.slice, address="10.77.1.9")], [], {sid: (base.slice, str(new_address))})
    dst.network_changed()
    hosts = run_in(dst, sid, "cat /etc/hosts")[1]
    assert re.search(r"^10\.77\.1\.9\s+peer-1\b", hosts, re.M), hosts
    assert run_in(dst, sid, "cat /etc/resolv.conf")[0] == 0

    src.destroy(sid)
    assert src.pid(sid) is None and dst.status(sid).state == "running"


def test_a_move_to_nowhere_fails_and_the_guest_runs_on(two_nodes: tuple[QemuBackend, QemuBackend]) -> None:
    src, _ = two_nodes
    sid = f"{PREFIX}-stay"
    base = counting(src, sid)
    before = wait_until(lambda: (n := count(src, sid)) >= 1 and n, 60, "the counter to run")
    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]  # nobody listens there once closed
    out = dataclasses.replace(base, migration=Migration(role="out", kind="live", token=TOKEN, peer="m2", endpoint=f"127.0.0.1:{dead_port}", disk_endpoint=f"127.0.0.1:{dead_port}"))
    with pytest.raises(BackendError, match=r"Connection refused|connect"):
        src.send(out)
    assert src.status(sid).state == "running"
    assert wait_until(lambda: count(src, sid) > before, 60, "the counter to go on")
    assert launcher.qemu_pid(src._paths(sid)) is not None
