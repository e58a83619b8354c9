"""The node firewall confines a VM sliver as it does a container: the "guest" here is this test
writing Ethernet frames into the VM's TAP exactly as QEMU would, and reading what comes back."""

from __future__ import annotations

import os
import select
import socket
import struct
import subprocess
import time
from pathlib import Path

import pytest
from test_machine_network import GUEST_MAC, open_tap, udp_frame

from node_agent import firewall
from node_agent.machine_resources import MachineResources
from tests.integration.realhost import new_prefix

pytestmark = pytest.mark.timeout(60)
TCP, UDP, ICMP = 6, 17, 1


def _sum16(data: bytes) -> int:
    data += b"\0" * (len(data) % 2)
    words = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while words >> 16:
        words = (words & 0xFFFF) + (words >> 16)
    return ~words & 0xFFFF


def _ip(proto: int, src: str, dst: str, payload: bytes) -> bytes:
    head = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0, 0x4000, 64, proto, 0, socket.inet_aton(src), socket.inet_aton(dst))
    return head[:10] + struct.pack("!H", _sum16(head)) + head[12:] + payload


def syn_frame(dst_mac: bytes, src: str, dst: str, port: int) -> bytes:
    tcp = struct.pack("!HHIIBBHHH", 40001, port, 1, 0, 5 << 4, 0x02, 64240, 0, 0)
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, TCP, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", _sum16(pseudo + tcp)) + tcp[18:]
    return dst_mac + GUEST_MAC + b"\x08\x00" + _ip(TCP, src, dst, tcp)


def echo_frame(dst_mac: bytes, src: str, dst: str) -> bytes:
    icmp = struct.pack("!BBHHH", 8, 0, 0, 7, 1) + b"slicemesh"
    icmp = icmp[:2] + struct.pack("!H", _sum16(icmp)) + icmp[4:]
    return dst_mac + GUEST_MAC + b"\x08\x00" + _ip(ICMP, src, dst, icmp)


def answer(fd: int, gateway: str, timeout: float = 3.0) -> tuple[int, bytes] | None:
    """The first TCP or ICMP packet from the gateway out of the TAP: (protocol, its IP payload).
    Others are skipped: the host's own IGMP membership reports go out of every bridge port."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        if not select.select([fd], [], [], left)[0]:
            break
        frame = os.read(fd, 4096)
        if frame[12:14] == b"\x08\x00" and frame[26:30] == socket.inet_aton(gateway) and frame[23] in (socket.IPPROTO_ICMP, socket.IPPROTO_TCP):
            ihl = (frame[14] & 0x0F) * 4
            return frame[23], frame[14 + ihl :]
    return None


def test_a_vm_meets_the_same_table_as_a_container(machine: MachineResources) -> None:
    net = machine.net
    assert firewall.tables(net.bridge) == [net.bridge]
    guest = machine.addresses.allocate("vmfw")
    tap = net.setup_tap("vmfw", guest, None)
    fd = open_tap(tap)
    bridge_mac = bytes.fromhex(Path(f"/sys/class/net/{net.bridge}/address").read_text().strip().replace(":", ""))
    subprocess.run(["ip", "neigh", "replace", guest, "lladdr", GUEST_MAC.hex(":"), "dev", net.bridge, "nud", "permanent"], check=True)
    listener = socket.create_server(("0.0.0.0", 0))  # on every host address, the gateway's too
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("0.0.0.0", 0))
    udp.setblocking(False)
    try:
        os.write(fd, syn_frame(bridge_mac, guest, net.gateway, listener.getsockname()[1]))
        got = answer(fd, net.gateway)
        assert got is not None and got[0] == TCP and got[1][13] & 0x04, f"a reset, not a SYN-ACK: {got}"
        os.write(fd, udp_frame(bridge_mac, guest, net.gateway, udp.getsockname()[1]))
        got = answer(fd, net.gateway)
        assert got is not None and got[0] == ICMP and got[1][:2] == bytes([3, 3]), f"port unreachable: {got}"
        with pytest.raises(BlockingIOError):
            udp.recv(2048)  # nothing reached the host's socket
        os.write(fd, echo_frame(bridge_mac, guest, net.gateway))
        got = answer(fd, net.gateway)
        assert got is not None and got[0] == ICMP and got[1][0] == 0, f"an echo reply (icmp/echo is allowed by default): {got}"
        # what the operator allows passes: the table is replaced with the port listed
        firewall.install(net.bridge, net.gateway, firewall.parse_access([f"udp/{udp.getsockname()[1]}"]))
        os.write(fd, udp_frame(bridge_mac, guest, net.gateway, udp.getsockname()[1]))
        udp.settimeout(3)
        assert len(udp.recv(2048)) == 1400
    finally:
        os.close(fd)
        listener.close()
        udp.close()
        net.teardown_tap("vmfw")
    machine.forget()
    assert firewall.tables(net.bridge) == [], "the table goes with the node"


def test_a_host_without_nft_is_refused_before_anything_is_made(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    prefix = new_prefix("m")
    monkeypatch.setenv("PATH", str(tmp_path))  # a host where the nftables package is missing
    with pytest.raises(firewall.FirewallError, match="nftables"):
        MachineResources(tmp_path / "node", "nonft", prefix=prefix, capacity_cpu=1.0, capacity_memory=1 << 30, images_dir=tmp_path / "images")
    assert not [p for p in Path("/sys/fs/cgroup").glob(f"*/{prefix}")], "no cgroup"
    assert not (tmp_path / "node").exists()
