"""What the transport alone holds per connected peer: the controller's ``Router`` (CURVE, ZAP)
in a process of its own, answering N DEALERs, with nothing of the controller around it.

Measured twice: after every peer's first round trip, and after ``rounds`` round trips each.
libzmq queues each direction of a connection in chunks of 256 messages (a compile-time
constant, ``message_pipe_granularity``) and keeps a spare chunk per queue, so a connection's
memory grows until about 512 messages have gone each way, then stays. The difference between
the two figures is that growth; the controller can hold no less per agent than the second.

``python -m benchmarks.zmqfloor server PUBLIC SECRET`` is the server side (it prints its URL).
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass

from benchmarks.common import rss_mib, stop_process
from slices.transport import ClientKeys, Dealer, Keypair, Poller, Router, new_keypair

REPLY = b"r" * 160  # about a Beat
REQUEST = b"h" * 320  # about a Heartbeat with no changes to report


@dataclass(frozen=True)
class Floor:
    connections: int
    rounds: int
    first_kib: float  # per connection, after one round trip each
    steady_kib: float  # per connection, after ``rounds`` round trips each

    def per_1000_mib(self, kib: float) -> float:
        return kib * 1000 / 1024


def serve(public: str, secret: str) -> None:
    router = Router("tcp://127.0.0.1:*", Keypair(public, secret), lambda key: True)
    print(router.url, flush=True)
    poller = Poller()
    poller.add(router)
    while True:
        poller.poll(1.0)
        while (got := router.recv()) is not None:
            router.send(got[0], REPLY)


def _round_trip(dealers: list[Dealer], poller: Poller, timeout: float = 60.0) -> None:
    for d in dealers:
        d.send(REQUEST)
    got, deadline = 0, time.monotonic() + timeout
    while got < len(dealers):
        for ready in poller.poll(0.5):
            assert isinstance(ready, Dealer)  # only dealers are registered
            while ready.recv() is not None:
                got += 1
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(dealers) - got} of {len(dealers)} replies missing after {timeout:g}s")


def measure(connections: int, rounds: int) -> Floor:
    """Start the server, connect ``connections`` DEALERs, and read its RSS twice."""
    pair = new_keypair()
    server = subprocess.Popen([sys.executable, "-m", "benchmarks.zmqfloor", "server", pair.public, pair.secret], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    dealers: list[Dealer] = []
    try:
        assert server.stdout is not None
        url = server.stdout.readline().decode().strip()
        if not url:
            raise RuntimeError(f"the transport floor server exited with code {server.wait()}")
        time.sleep(0.3)
        empty = rss_mib(server.pid)
        poller = Poller()
        for i in range(connections):
            dealers.append(Dealer(url, f"floor-{i}", ClientKeys(pair.public, new_keypair())))
            poller.add(dealers[-1])
        _round_trip(dealers, poller)
        time.sleep(0.2)
        first = rss_mib(server.pid)
        for _ in range(rounds - 1):
            _round_trip(dealers, poller)
        time.sleep(0.2)
        steady = rss_mib(server.pid)
    finally:
        for d in dealers:
            d.close()
        stop_process(server)
    per = 1024 / connections
    return Floor(connections, rounds, (first - empty) * per, (steady - empty) * per)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "server":
        serve(sys.argv[2], sys.argv[3])
    else:
        sys.exit("usage: python -m benchmarks.zmqfloor server PUBLIC SECRET")
