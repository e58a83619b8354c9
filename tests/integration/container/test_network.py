"""Each sliver has its own interface and address on the node bridge, and its bandwidth is shaped."""

from __future__ import annotations

import ipaddress
import socket
import threading
import time

import pytest
from ctr_helpers import run_in, spec

from node_agent.backends.runc.backend import RuncBackend
from tests.conftest import wait_for

pytestmark = pytest.mark.timeout(60)


def test_own_interface_and_address(backend: RuncBackend) -> None:
    backend.create(spec("n1"))
    backend.create(spec("n2"))
    a1, a2 = backend.net.address_of("n1"), backend.net.address_of("n2")
    assert a1 and a2 and a1 != a2
    assert ipaddress.ip_address(a1) in ipaddress.ip_network(backend.net.subnet)
    code, out, _ = run_in(backend, "n1", "ip -o -4 addr show; ip route")
    assert code == 0
    assert f"eth0    inet {a1}/24" in " ".join(out.split("\n")) or f"inet {a1}/24" in out
    assert f"default via {backend.net.gateway}" in out
    assert a2 not in out
    code, out, _ = run_in(backend, "n1", f"ping -c 1 -W 2 {a2} >/dev/null 2>&1 || nc -z -w 1 {a2} 1; echo done")
    assert code == 0


def test_egress_bandwidth_is_held(make_backend) -> None:  # type: ignore[no-untyped-def]
    rate = 8_000_000  # bits/s = 1 MB/s
    total = 3_000_000  # ~3 s at the limit
    srv = socket.create_server(("0.0.0.0", 0))
    port = srv.getsockname()[1]
    backend: RuncBackend = make_backend(machine={"host_access": [f"tcp/{port}"]})  # the host is closed to slivers but for this
    got: dict[str, float] = {}

    def serve() -> None:
        conn, _ = srv.accept()
        n, first = 0, 0.0
        while n < total:
            chunk = conn.recv(65536)
            if not chunk:
                break
            if not first:
                first, n0 = time.monotonic(), len(chunk)
            n += len(chunk)
        got.update(bytes=n - n0, seconds=time.monotonic() - first)
        conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    backend.create(spec("bw", bandwidth=rate))
    run_in(backend, "bw", f"dd if=/dev/zero bs=10000 count={total // 10000} 2>/dev/null | nc -w 2 {backend.net.gateway} {port}", 30)
    t.join(timeout=20)
    srv.close()
    measured = got["bytes"] * 8 / got["seconds"]
    assert 0.8 * rate <= measured <= 1.2 * rate, measured
    wait_for(lambda: backend.usage("bw").net_tx >= total * 0.9, what="tx counter")
