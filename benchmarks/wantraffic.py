"""Traffic for the WAN benchmark, run inside a sliver namespace (``ip netns exec NS python -m ...``).

    udp-send DST PORT SIZE SECONDS [PPS]   send datagrams (paced at PPS, or as fast as it can); prints the count
    udp-hold PORT SECONDS                  bind and never read: the kernel drops what overflows, no ICMP
    tcp-sink PORT                          accept one connection, read to the end; prints bytes and seconds
    tcp-send DST PORT SECONDS              send as fast as TCP allows for SECONDS

Receivers print ``ready`` once bound, so the benchmark starts senders only then.
"""

from __future__ import annotations

import socket
import sys
import time


def udp_send(dst: str, port: int, size: int, seconds: float, pps: float = 0.0) -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect((dst, port))
    buf = b"\x00" * size
    sent, start = 0, time.monotonic()
    end = start + seconds
    now = start
    while now < end:
        burst = 64
        if pps:
            due = int((now - start) * pps) - sent  # pace in small bursts
            if due <= 0:
                time.sleep(0.0005)
                now = time.monotonic()
                continue
            burst = min(due, 64)
        for _ in range(burst):
            try:
                s.send(buf)
                sent += 1
            except OSError:  # ENOBUFS: the sender's own queue is full
                pass
        now = time.monotonic()
    return sent


def udp_hold(port: int, seconds: float) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.bind(("0.0.0.0", port))
    print("ready", flush=True)
    time.sleep(seconds)


def tcp_sink(port: int) -> tuple[int, float]:
    srv = socket.create_server(("0.0.0.0", port))
    print("ready", flush=True)
    conn, _ = srv.accept()
    n, first = 0, 0.0
    while True:
        chunk = conn.recv(1 << 20)
        if not chunk:
            break
        if not first:
            first = time.monotonic()
        n += len(chunk)
    return n, time.monotonic() - first if first else 0.0


def tcp_send(dst: str, port: int, seconds: float) -> None:
    c = socket.create_connection((dst, port), timeout=10)
    buf = b"\x00" * (1 << 20)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        c.sendall(buf)
    c.close()


def main(argv: list[str]) -> int:
    cmd, args = argv[0], argv[1:]
    if cmd == "udp-send":
        print(udp_send(args[0], int(args[1]), int(args[2]), float(args[3]), float(args[4]) if len(args) > 4 else 0.0), flush=True)
    elif cmd == "udp-hold":
        udp_hold(int(args[0]), float(args[1]))
    elif cmd == "tcp-sink":
        n, secs = tcp_sink(int(args[0]))
        print(n, secs, flush=True)
    elif cmd == "tcp-send":
        tcp_send(args[0], int(args[1]), float(args[2]))
    else:
        print(f"unknown command {cmd}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
