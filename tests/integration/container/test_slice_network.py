"""Slices as networks, for real: slivers of one slice reach each other by name, other slices'
slivers are refused unless both slices are open, the world is reached through NAT, names
resolve through the configured resolver, and busybox's network applets run in a sliver.

The node's view of the slices is set as the agent sets it (``MachineResources.set_slices``,
then ``network_changed``); "the world" is a network namespace this test makes, reached over
a veth pair from the host, outside every sliver subnet (10.253.0.0/16 is none's).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from ctr_helpers import py_in, run_in, spec

from node_agent.backends.runc.backend import RuncBackend
from tests.conftest import wait_for

pytestmark = pytest.mark.timeout(120)

TAG = f"{os.getpid() % 100000:05d}"
WORLD_NS = f"smw{TAG}"
HOST_IF, WORLD_IF = f"smw{TAG}h", f"smw{TAG}w"
HOST_ADDR, WORLD_ADDR = f"10.253.{os.getpid() % 250}.1", f"10.253.{os.getpid() % 250}.2"
NAME, ANSWER = "world.slicemesh.test", "10.253.254.7"

#: A DNS server of a dozen lines: every A query for NAME gets ANSWER (nslookup's first query).
DNS = f"""
import socket, struct
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("{WORLD_ADDR}", 53)); print("ready", flush=True)
while True:
    q, peer = s.recvfrom(512)
    end = q.index(b"\\0", 12) + 5
    qtype = struct.unpack("!H", q[end - 4 : end - 2])[0]
    ok = qtype == 1
    head = q[:2] + struct.pack("!HHHHH", 0x8180, 1, 1 if ok else 0, 0, 0)
    body = q[12:end] + (b"\\xc0\\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + socket.inet_aton("{ANSWER}") if ok else b"")
    s.sendto(head + body, peer)
"""
HTTP = f"""
import http.server
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(("hello " + self.client_address[0]).encode())
    def log_message(self, *a): pass
srv = http.server.HTTPServer(("{WORLD_ADDR}", 8080), H); print("ready", flush=True); srv.serve_forever()
"""


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@pytest.fixture
def world() -> Iterator[Callable[[str], subprocess.Popen[str]]]:
    """A netns at WORLD_ADDR behind a veth whose host end forwards (replies go back to slivers);
    yields a starter of Python servers inside it. Removed after, servers included."""
    procs: list[subprocess.Popen[str]] = []
    _ip("netns", "add", WORLD_NS)
    try:
        _ip("link", "add", HOST_IF, "type", "veth", "peer", "name", WORLD_IF, "netns", WORLD_NS)
        _ip("addr", "add", f"{HOST_ADDR}/30", "dev", HOST_IF)
        _ip("link", "set", HOST_IF, "up")
        Path(f"/proc/sys/net/ipv4/conf/{HOST_IF}/forwarding").write_text("1\n")
        _ip("-n", WORLD_NS, "addr", "add", f"{WORLD_ADDR}/30", "dev", WORLD_IF)
        _ip("-n", WORLD_NS, "link", "set", WORLD_IF, "up")
        _ip("-n", WORLD_NS, "link", "set", "lo", "up")

        def serve(code: str) -> subprocess.Popen[str]:
            p = subprocess.Popen(["ip", "netns", "exec", WORLD_NS, sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
            procs.append(p)
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
            return p

        yield serve
    finally:
        for p in procs:
            p.kill()
            p.wait(timeout=10)
        subprocess.run(["ip", "link", "del", HOST_IF], capture_output=True, timeout=10)
        subprocess.run(["ip", "netns", "del", WORLD_NS], capture_output=True, timeout=10)


def _slices(backend: RuncBackend, members: dict[str, str], open_slices: tuple[str, ...] = ()) -> dict[str, str]:
    """What the agent does: every local sliver (id -> slice) into the node's slice sets, then
    the slivers' /etc files; returns id -> address."""
    pool = backend.machine.addresses
    local = {sid: (slice_name, pool.allocate(sid)) for sid, slice_name in members.items()}
    backend.machine.set_slices([], list(open_slices), local)
    backend.network_changed()
    return {sid: addr for sid, (_, addr) in local.items()}


def _reaches(backend: RuncBackend, sliver: str, address: str) -> bool:
    """ICMP echo from a ``host``-image sliver (iputils' ping, which needs no privilege)."""
    code, _, _ = run_in(backend, sliver, f"ping -c 1 -W 1 {address} >/dev/null 2>&1")
    return code == 0


def test_one_slice_reaches_itself_by_name_and_no_other(make_backend: Callable[..., RuncBackend]) -> None:
    backend = make_backend(machine={"nat": True})
    members = {"a1": "alpha", "a2": "alpha", "b1": "beta"}
    addrs = _slices(backend, members)  # before they start, as the agent does: no moment unconfined
    for sid, slice_name in members.items():
        backend.create(spec(sid, slice=slice_name, image="host"))
    code, hosts, _ = run_in(backend, "a1", "cat /etc/hosts")
    assert code == 0 and f"{addrs['a2']}\ta2" in hosts and "b1" not in hosts
    code, out, err = run_in(backend, "a1", "ping -c 1 -W 2 a2")  # iputils' ping: ICMP echo without CAP_NET_RAW, by name
    assert code == 0, out + err
    assert not _reaches(backend, "a1", addrs["b1"]) and not _reaches(backend, "b1", addrs["a2"])
    code, out, _ = py_in(backend, "a1", "import socket, sys; s = socket.socket(); s.settimeout(2); print(s.connect_ex((sys.argv[1], 7)))", addrs["b1"])
    assert code == 0 and out.strip() != "0", out  # TCP to another slice: no connection either
    # Both slices open to other slices: they reach each other; one open is not enough.
    _slices(backend, members, ("alpha",))
    assert not _reaches(backend, "a1", addrs["b1"])
    _slices(backend, members, ("alpha", "beta"))
    assert wait_for(lambda: _reaches(backend, "a1", addrs["b1"]), timeout=10)


def test_world_through_nat_resolver_and_applets(make_backend: Callable[..., RuncBackend], world: Callable[[str], subprocess.Popen[str]]) -> None:
    world(DNS)
    world(HTTP)
    backend = make_backend(machine={"nat": True, "resolvers": [WORLD_ADDR]})
    _slices(backend, {"w1": "web", "w2": "web"})
    backend.create(spec("w1", slice="web"))  # busybox
    backend.create(spec("w2", slice="web", image="host"))
    code, conf, _ = run_in(backend, "w1", "cat /etc/resolv.conf")
    assert code == 0 and conf == f"nameserver {WORLD_ADDR}\n"
    code, out, err = run_in(backend, "w1", f"wget -q -O - http://{WORLD_ADDR}:8080/")
    assert code == 0 and out == f"hello {HOST_ADDR}", out + err  # masqueraded behind the host
    code, out, err = run_in(backend, "w1", f"nslookup {NAME}")
    assert code == 0 and ANSWER in out, out + err
    code, out, err = run_in(backend, "w1", f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {WORLD_ADDR} 8080 | head -1")
    assert code == 0 and out.startswith("HTTP/1."), out + err
    # Debian's busybox 1.35 ping opens only raw sockets (no ICMP datagram fallback): refused
    code, out, err = run_in(backend, "w1", f"ping -c 1 -W 1 {WORLD_ADDR}")
    assert code != 0 and "permission denied" in out + err, (code, out, err)
    # the host image's iputils ping and UDP traceroute need no privilege, and cross the NAT
    assert _reaches(backend, "w2", WORLD_ADDR)
    code, out, err = run_in(backend, "w2", f"traceroute -n -m 3 -w 1 -q 1 {WORLD_ADDR}", timeout=30)
    assert code == 0 and WORLD_ADDR in out.splitlines()[-1], out + err


LISTEN = """
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("0.0.0.0", 7000)); s.listen()
while True:
    c, peer = s.accept(); c.sendall(peer[0].encode()); c.close()
"""
CONNECT = """
import socket, sys
try:
    s = socket.create_connection((sys.argv[1], 7000), timeout=2); print(s.recv(64).decode())
except OSError as exc:
    print("no:", exc)
"""


def test_a_port_speaks_only_from_its_slivers_address(make_backend: Callable[..., RuncBackend]) -> None:
    """A VM guest's root sets any address on its NIC (a container sliver cannot: no
    CAP_NET_ADMIN or CAP_NET_RAW). Stood in for here by a netns of this test's own on the
    node's bridge, under the port name of beta's sliver: from alpha's other address it must
    not reach alpha's sliver, which the slice sets alone would let through."""
    backend = make_backend()
    net = backend.machine.net
    addrs = _slices(backend, {"a1": "alpha", "a2": "alpha", "b1": "beta"})
    backend.create(spec("a1", slice="alpha", image="host", command=["python3", "-c", LISTEN]))
    prefix_len = net.subnet.split("/")[1]
    ns, inside = f"smg{TAG}", f"smg{TAG}i"
    b1_port, a2_port = net.ports("b1")[1], net.ports("a2")[1]  # the TAPs the two would have
    _ip("netns", "add", ns)
    try:
        _ip("link", "add", b1_port, "type", "veth", "peer", "name", inside, "netns", ns)
        _ip("link", "set", b1_port, "master", net.bridge, "up")
        _ip("-n", ns, "addr", "add", f"{addrs['a2']}/{prefix_len}", "dev", inside)  # alpha's a2, spoofed
        _ip("-n", ns, "link", "set", inside, "up")

        def connect() -> str:
            out = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", CONNECT, addrs["a1"]], capture_output=True, text=True, timeout=30)
            return out.stdout.strip()

        wait_for(lambda: run_in(backend, "a1", "ss -ltn | grep -q :7000")[0] == 0, timeout=20, what="a1 listening")
        assert connect().startswith("no:"), "the spoofed address is dropped at beta's port"
        subprocess.run(["nft", "flush", "set", "bridge", net.bridge, "guarded"], check=True, timeout=10)
        assert wait_for(lambda: connect() == addrs["a2"], timeout=10), "without the guard, the same spoof gets through"
        _slices(backend, {"a1": "alpha", "a2": "alpha", "b1": "beta"})  # the agent's sets again
        _ip("link", "set", b1_port, "down")
        _ip("link", "set", b1_port, "name", a2_port)  # now a2's own port, with a2's own address
        _ip("link", "set", a2_port, "up")
        assert wait_for(lambda: connect() == addrs["a2"], timeout=10), "a port's own address passes"
    finally:
        for port in (b1_port, a2_port):
            subprocess.run(["ip", "link", "del", port], capture_output=True, timeout=10)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


def test_no_ipv6_between_slivers_on_the_bridge(make_backend: Callable[..., RuncBackend]) -> None:
    """Slivers speak IPv4 (the slice sets are IPv4 addresses): IPv6 link-local between two
    slivers of one node, which the kernel gives every interface, would pass by every set."""
    backend = make_backend()
    _slices(backend, {"a1": "alpha", "b1": "beta"})
    for sid, slice_name in (("a1", "alpha"), ("b1", "beta")):
        backend.create(spec(sid, slice=slice_name, image="host"))

    def link_local(sid: str) -> str | None:
        """The sliver's link-local address once the kernel's duplicate check is done."""
        out = run_in(backend, sid, "ip -6 addr show dev eth0 scope link")[1]
        if "tentative" in out:
            return None
        return next((line.split()[1].split("/")[0] for line in out.splitlines() if line.split()[:1] == ["inet6"]), None)

    wait_for(lambda: link_local("b1"), timeout=10, what="b1's link-local address")
    a1 = wait_for(lambda: link_local("a1"), timeout=10, what="a1's link-local address")
    ping6 = f"ping -6 -c 1 -W 1 {a1}%eth0 >/dev/null 2>&1"
    assert run_in(backend, "b1", ping6)[0] != 0, "another slice's sliver over IPv6 link-local"
    subprocess.run(["nft", "flush", "set", "bridge", backend.machine.net.bridge, "guarded"], check=True, timeout=10)
    assert wait_for(lambda: run_in(backend, "b1", ping6)[0] == 0, timeout=10), "without the rule it passes"


#: Listens on every frame of its netns's one interface; prints "got" once a frame carrying MARK
#: arrives (a VLAN tag the kernel strips is no matter: the payload is searched), else "none".
SNIFF = """
import socket, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3)); s.bind((sys.argv[1], 0)); s.settimeout(0.2)
print("ready", flush=True)
end = time.monotonic() + 3
while time.monotonic() < end:
    try:
        if b"slicemesh-mark" in s.recv(2048):
            print("got"); break
    except socket.timeout:
        pass
else:
    print("none")
"""
#: Sends broadcast frames out of its netns's interface: one of an experimental ether type, one
#: 802.1Q-tagged IPv4 packet from the port's own address (which an untagged frame may carry).
SEND = """
import socket, struct, sys, time
ifname, src = sys.argv[1], socket.inet_aton(sys.argv[2])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW); s.bind((ifname, 0))
head = b"\\xff" * 6 + s.getsockname()[4][:6]
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 34, 0, 0, 64, 17, 0, src, b"\\xff" * 4)
frames = [head + b"\\x88\\xb5" + b"slicemesh-mark" + b"\\0" * 32, head + b"\\x81\\x00\\x00\\x07\\x08\\x00" + ip + b"slicemesh-mark"]
for _ in range(10):
    for f in frames[int(sys.argv[3]) : int(sys.argv[3]) + 1]:
        s.send(f)
    time.sleep(0.1)
"""


def test_a_port_sends_no_other_ether_type_and_no_vlan_tag(make_backend: Callable[..., RuncBackend]) -> None:
    """A VM guest's root may send any frame: one of an ether type no rule looks into, or an
    IPv4 packet in a VLAN tag (which ``ether type ip`` does not match), would cross the bridge
    past every set. Stood in for by two netns of this test's own under beta's and alpha's
    port names: neither kind reaches the other port, until the guard is lifted."""
    backend = make_backend()
    net = backend.machine.net
    addrs = _slices(backend, {"a1": "alpha", "b1": "beta"})
    prefix_len = net.subnet.split("/")[1]
    ends = {sid: (f"smr{TAG}{sid}", net.ports(sid)[1], f"smr{TAG}{sid}i") for sid in ("a1", "b1")}
    try:
        for sid, (ns, port, inside) in ends.items():
            _ip("netns", "add", ns)
            _ip("link", "add", port, "type", "veth", "peer", "name", inside, "netns", ns)
            _ip("link", "set", port, "master", net.bridge, "up")
            _ip("-n", ns, "addr", "add", f"{addrs[sid]}/{prefix_len}", "dev", inside)
            _ip("-n", ns, "link", "set", inside, "up")

        def crosses(kind: int) -> bool:
            """Frames of ``kind`` (0: ether type 0x88b5, 1: 802.1Q) from b1's port reach a1's."""
            ns_a, _, in_a = ends["a1"]
            ns_b, _, in_b = ends["b1"]
            sniff = subprocess.Popen(["ip", "netns", "exec", ns_a, sys.executable, "-c", SNIFF, in_a], stdout=subprocess.PIPE, text=True)
            try:
                assert sniff.stdout is not None and sniff.stdout.readline().strip() == "ready"
                subprocess.run(["ip", "netns", "exec", ns_b, sys.executable, "-c", SEND, in_b, addrs["b1"], str(kind)], check=True, timeout=30)
                out, _ = sniff.communicate(timeout=30)
            finally:
                sniff.kill()
                sniff.wait(timeout=10)
            return out.strip() == "got"

        assert not crosses(0), "a frame of another ether type crossed the bridge"
        assert not crosses(1), "a VLAN-tagged frame crossed the bridge"
        subprocess.run(["nft", "flush", "set", "bridge", net.bridge, "guarded"], check=True, timeout=10)
        assert crosses(0) and crosses(1), "without the guard both kinds cross: the test sees them"
    finally:
        for ns, port, _ in ends.values():
            subprocess.run(["ip", "link", "del", port], capture_output=True, timeout=10)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)
