"""The node's network for both kinds of sliver: a container's netns + veth, a VM's TAP on the same
bridge, both shaped; QEMU attaches to the TAP by name. The "guest" here is this test holding
the TAP open exactly as QEMU does, writing and reading Ethernet frames."""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest

from node_agent import firewall
from node_agent.machine_resources import MachineResources
from node_agent.netdev import ifb_name
from node_agent.netns import NetError
from node_agent.tapdev import IFF_NO_PI, IFF_TAP, TUNSETIFF
from slices import limits
from tests.conftest import wait_for

pytestmark = pytest.mark.timeout(60)
IFF_MULTI_QUEUE, IFF_PERSIST = 0x0100, 0x0800
NS_GET_USERNS = 0xB701
GUEST_MAC = bytes.fromhex("020000aa0001")
RATE = 8_000_000  # bits/s
PAYLOAD = 1400
FRAME = 14 + 20 + 8 + PAYLOAD  # what tbf counts


def open_tap(name: str) -> int:
    """Attach to the TAP as QEMU's ``-netdev tap,ifname=`` does (single queue, no packet info)."""
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), IFF_TAP | IFF_NO_PI))
    return fd


def udp_frame(dst_mac: bytes, src_ip: str, dst_ip: str, port: int) -> bytes:
    """Ethernet + IPv4 + UDP (no UDP checksum, which IPv4 allows) carrying PAYLOAD zero bytes."""
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + 8 + PAYLOAD, 0, 0x4000, 64, 17, 0, socket.inet_aton(src_ip), socket.inet_aton(dst_ip))
    words = sum(struct.unpack("!10H", ip))
    while words >> 16:
        words = (words & 0xFFFF) + (words >> 16)
    ip = ip[:10] + struct.pack("!H", ~words & 0xFFFF) + ip[12:]
    udp = struct.pack("!HHHH", 40000, port, 8 + PAYLOAD, 0)
    return dst_mac + GUEST_MAC + b"\x08\x00" + ip + udp + bytes(PAYLOAD)


def paced(send: object, seconds: float, factor: float = 4.0) -> None:
    """Call ``send()`` for ``seconds`` at ``factor`` times RATE: enough to fill the bucket."""
    per_tick = max(1, int(RATE * factor / 8 / FRAME / 100))
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for _ in range(per_tick):
            send()  # type: ignore[operator]
        time.sleep(0.01)  # load generator pacing, not a wait on a condition


def rate_of(stamps: list[float]) -> float:
    return (len(stamps) - 1) * FRAME * 8 / (stamps[-1] - stamps[0])


def link_flags(name: str) -> int:
    return int(Path(f"/sys/class/net/{name}/tun_flags").read_text(), 16)


def test_container_netns_and_veth_on_the_bridge(machine: MachineResources) -> None:
    addr = machine.addresses.allocate("c1")
    ns, host_if = machine.net.setup("c1", addr, 10_000_000)
    assert Path(ns).exists() and Path(f"/sys/class/net/{host_if}/master").resolve().name == machine.net.bridge
    assert machine.net.address_of("c1") == addr
    machine.net.teardown("c1")
    assert not Path(ns).exists() and not Path(f"/sys/class/net/{host_if}").exists()


def test_tap_is_a_persistent_single_queue_root_owned_bridge_port(machine: MachineResources) -> None:
    addr = machine.addresses.allocate("vm1")
    tap = machine.net.setup_tap("vm1", addr, RATE)
    sys_tap = Path("/sys/class/net") / tap
    flags = link_flags(tap)
    assert flags & IFF_TAP and flags & IFF_NO_PI and flags & IFF_PERSIST and not flags & IFF_MULTI_QUEUE
    assert (sys_tap / "owner").read_text().strip() == "0"
    assert (sys_tap / "master").resolve().name == machine.net.bridge
    assert int((sys_tap / "flags").read_text(), 16) & 1, "administratively up"
    assert machine.net.setup_tap("vm1", addr, RATE) == tap, "idempotent"
    qdiscs = subprocess.run(["tc", "qdisc", "show", "dev", tap], capture_output=True, text=True, check=True).stdout
    assert "qdisc tbf" in qdiscs and "qdisc ingress" in qdiscs
    ifb = ifb_name(machine.prefix, machine.node, "vm1")
    assert "qdisc tbf" in subprocess.run(["tc", "qdisc", "show", "dev", ifb], capture_output=True, text=True, check=True).stdout
    machine.net.teardown_tap("vm1")
    assert not sys_tap.exists() and not Path(f"/sys/class/net/{ifb}").exists()
    machine.net.teardown_tap("vm1")  # a no-op once gone


@pytest.mark.parametrize("bad", ["10.0.0.300", "192.0.2.7", "gateway", "broadcast"])
def test_tap_refuses_an_address_outside_the_sliver_range_and_makes_nothing(machine: MachineResources, bad: str) -> None:
    net = machine.net
    address = {"gateway": net.gateway, "broadcast": net.subnet.replace(".0/24", ".255")}.get(bad, bad)
    before = sorted(os.listdir("/sys/class/net"))
    with pytest.raises(NetError, match="not a sliver address"):
        net.setup_tap("bad", address, RATE)
    assert sorted(os.listdir("/sys/class/net")) == before


@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86 is not installed (Debian package qemu-system-x86)")
def test_qemu_attaches_to_the_tap_by_name(machine: MachineResources) -> None:
    tap = machine.net.setup_tap("vmq", machine.addresses.allocate("vmq"), None)
    carrier = Path("/sys/class/net") / tap / "carrier"
    assert carrier.read_text().strip() == "0", "no one holds it yet"
    qemu = subprocess.Popen(
        ["qemu-system-x86_64", "-M", "none", "-nodefaults", "-display", "none", "-S",
         "-netdev", f"tap,id=n0,ifname={tap},script=no,downscript=no"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        wait_for(lambda: carrier.read_text().strip() == "1", timeout=30, what="QEMU to open the TAP")
    finally:
        qemu.terminate()
        qemu.wait(timeout=10)
    wait_for(lambda: carrier.read_text().strip() == "0", what="carrier to drop with QEMU gone")
    assert Path("/sys/class/net", tap).exists(), "persistent: outlives the QEMU that used it"


def test_what_a_vm_sends_and_receives_is_shaped(machine: MachineResources) -> None:
    guest_ip = machine.addresses.allocate("vmbw")
    tap = machine.net.setup_tap("vmbw", guest_ip, RATE)
    fd = open_tap(tap)
    bridge_mac = bytes.fromhex(Path(f"/sys/class/net/{machine.net.bridge}/address").read_text().strip().replace(":", ""))
    try:
        # guest -> host: frames written into the TAP reach a socket on the bridge address
        srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        srv.bind((machine.net.gateway, 0))
        srv.settimeout(1.0)
        firewall.install(machine.net.bridge, machine.net.gateway, firewall.parse_access([f"udp/{srv.getsockname()[1]}"]))  # the host is closed to slivers but for this
        frame = udp_frame(bridge_mac, guest_ip, machine.net.gateway, srv.getsockname()[1])
        got: list[float] = []

        def receive() -> None:
            try:
                while srv.recv(2048):
                    got.append(time.monotonic())
            except TimeoutError:
                pass

        rx = threading.Thread(target=receive)
        rx.start()
        paced(lambda: os.write(fd, frame), 2.0)
        rx.join(timeout=10)
        srv.close()
        assert len(got) > 50, len(got)
        assert 0.8 * RATE <= rate_of(got) <= 1.2 * RATE, rate_of(got)
        # host -> guest: datagrams to the guest's address come out of the TAP
        subprocess.run(["ip", "neigh", "replace", guest_ip, "lladdr", GUEST_MAC.hex(":"), "dev", machine.net.bridge, "nud", "permanent"], check=True)
        seen: list[float] = []
        stop = threading.Event()

        def read_tap() -> None:
            os.set_blocking(fd, False)
            while not stop.is_set():
                try:
                    data = os.read(fd, 4096)
                except BlockingIOError:
                    time.sleep(0.001)
                    continue
                if len(data) == FRAME and data[23] == 17:
                    seen.append(time.monotonic())

        reader = threading.Thread(target=read_tap)
        reader.start()
        out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        paced(lambda: out.sendto(bytes(PAYLOAD), (guest_ip, 9)), 2.0)
        wait_for(lambda: seen and time.monotonic() - seen[-1] > 0.3, what="the queue to drain")
        stop.set()
        reader.join(timeout=10)
        out.close()
        assert len(seen) > 50, len(seen)
        assert 0.8 * RATE <= rate_of(seen) <= 1.2 * RATE, rate_of(seen)
    finally:
        os.close(fd)
    assert machine.net.counters("vmbw")[1] >= len(got) * FRAME, "counters: the TAP's rx is what the VM sent"


def tbf_of(dev: str, netns: str | None = None) -> dict[str, object]:
    cmd = ["tc", "-j", "qdisc", "show", "dev", dev]
    if netns:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    import json

    qdiscs = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
    tbf: dict[str, object] = next(q for q in qdiscs if q["kind"] == "tbf")
    return tbf


@pytest.mark.parametrize("bandwidth", [limits.MIN_BANDWIDTH, 100_000_000, limits.MAX_BANDWIDTH, 40_000_000_000])  # over 32 bits of bytes/s needs the 64-bit rate
def test_hand_encoded_shaping_is_what_tc_would_make(machine: MachineResources, bandwidth: int) -> None:
    """The netlink requests on the start-up path are packed by hand (rtnl.py): tc reads back
    the rate and burst asked for, on both ends of the veth."""
    addr = machine.addresses.allocate("sh")
    ns, host_if = machine.net.setup("sh", addr, bandwidth)
    for tbf in (tbf_of(host_if), tbf_of("eth0", Path(ns).name)):
        opts = tbf["options"]
        assert isinstance(opts, dict)
        assert opts["rate"] == bandwidth // 8, opts  # tc -j prints bytes per second
        burst = max(bandwidth // 8 // 100, 16 * 1024)
        assert abs(int(opts["burst"]) - burst) <= burst // 1000, opts  # kept as a time by the kernel: rounded
    out = subprocess.run(["ip", "netns", "exec", Path(ns).name, "ip", "-4", "-o", "addr", "show", "dev", "eth0"], capture_output=True, text=True, check=True).stdout
    assert f"inet {addr}/{machine.net.prefixlen}" in out
    route = subprocess.run(["ip", "netns", "exec", Path(ns).name, "ip", "route", "show", "default"], capture_output=True, text=True, check=True).stdout
    assert f"default via {machine.net.gateway} dev eth0" in route
    machine.net.teardown("sh")


def test_netlink_refusals_are_errors_with_the_kernels_reason(machine: MachineResources) -> None:
    from node_agent import rtnl

    sock = rtnl.open_socket()
    try:
        with pytest.raises(OSError) as err:
            rtnl.link_index(sock, "nosuchlink0")
        assert err.value.errno == 19  # ENODEV
        with pytest.raises(OSError) as err:
            rtnl.tbf_replace(sock, 10**6, 1_000_000)  # no such interface index
        assert err.value.errno == 19
    finally:
        sock.close()


def test_spare_pairs_are_kept_ready_and_taken(machine: MachineResources) -> None:
    machine.net.spares.wanted = 2
    machine.warmer.poke()
    assert machine.warmer.wait_idle(30)
    spares = [p.ns_path for p in machine.net.spares._pairs]
    assert len(spares) == 2 and all(p.exists() for p in spares)
    address = machine.addresses.allocate("from-spare")
    host_id = machine.host_id(address)
    assert host_id is not None, "user namespaces are on by default"
    ns, _ = machine.net.setup("from-spare", address, None, host_id)
    assert not spares[0].exists(), "the first spare became the sliver's netns"
    userns = machine.net.idmap("from-spare", host_id).path
    fd = os.open(ns, os.O_RDONLY)
    try:
        owner = fcntl.ioctl(fd, NS_GET_USERNS)  # the user namespace owning the netns
        assert os.fstat(owner).st_ino == os.stat(userns).st_ino, "made with the spare, pinned for the sliver"
        os.close(owner)
    finally:
        os.close(fd)
    machine.warmer.poke()  # what a backend does after a start-up
    assert machine.warmer.wait_idle(30) and len(machine.net.spares._pairs) == 2, "and was replaced"
    machine.net.teardown("from-spare")
    assert not userns.exists()
    machine.close()
    assert not any(p.exists() for p in spares[1:]) and not Path(ns).exists()
