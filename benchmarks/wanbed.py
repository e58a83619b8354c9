"""A private world for the wide-area path, shared by the WAN benchmark and its tests.

One network namespace plays the host: in it one bridge per simulated node with the node's
gateway address, and on each bridge one or more sliver namespaces (veth pair, ``eth0`` with an
address, default route via the bridge), as ``node_agent.netdev`` builds them on a real host.
The delay daemon runs inside the host namespace (``Wan(netns=...)``), so the machine's own
routing is never touched. Names carry a random token; ``close`` removes every namespace and
with them every bridge, veth and TUN.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
from collections.abc import Sequence
from pathlib import Path

from pyroute2 import IPRoute, netns

from node_agent.wan.model import WanNode
from slices.catalogue import Site

NETNS_DIR = Path("/run/netns")
_RTT = re.compile(r"time=([0-9.]+) ms")


class WanBed:
    def __init__(self, places: Sequence[tuple[str, Site]], *, slivers: int = 1) -> None:
        self.token = f"wb{secrets.token_hex(3)}"
        self.host = f"{self.token}-h"
        self.nodes: list[WanNode] = []
        self._ns: list[str] = []
        self.slivers = slivers
        try:
            self._build(places)
        except BaseException:
            self.close()
            raise

    @property
    def host_path(self) -> str:
        return str(NETNS_DIR / self.host)

    def sliver_ns(self, node: int, sliver: int = 0) -> str:
        return f"{self.token}-n{node}s{sliver}"

    def address(self, node: int, sliver: int = 0) -> str:
        return f"10.77.{node}.{sliver + 2}"

    def _build(self, places: Sequence[tuple[str, Site]]) -> None:
        netns.create(self.host)
        self._ns.append(self.host)
        with IPRoute(netns=self.host) as ipr:
            ipr.link("set", index=1, state="up")
            for i, (name, site) in enumerate(places):
                bridge = f"{self.token}-b{i}"
                ipr.link("add", ifname=bridge, kind="bridge")
                bidx = ipr.link_lookup(ifname=bridge)[0]
                ipr.addr("add", index=bidx, address=f"10.77.{i}.1", prefixlen=24)
                ipr.link("set", index=bidx, state="up")
                self.nodes.append(WanNode(name, site.name, site.lat, site.lon, f"10.77.{i}.0/24", bridge))
                for j in range(self.slivers):
                    self._add_sliver(ipr, bidx, i, j)

    def _add_sliver(self, ipr: IPRoute, bridge_idx: int, i: int, j: int) -> None:
        ns = self.sliver_ns(i, j)
        netns.create(ns)
        self._ns.append(ns)
        host_if = f"{self.token}v{i}s{j}"
        fd = os.open(NETNS_DIR / ns, os.O_RDONLY)
        try:
            ipr.link("add", ifname=host_if, kind="veth", peer={"ifname": "eth0", "net_ns_fd": fd})
        finally:
            os.close(fd)
        ipr.link("set", index=ipr.link_lookup(ifname=host_if)[0], master=bridge_idx, state="up")
        with IPRoute(netns=ns) as inner:
            inner.link("set", index=1, state="up")
            eth = inner.link_lookup(ifname="eth0")[0]
            inner.addr("add", index=eth, address=self.address(i, j), prefixlen=24)
            inner.link("set", index=eth, state="up")
            inner.route("add", dst="0.0.0.0/0", gateway=f"10.77.{i}.1")

    def argv(self, node: int, sliver: int, cmd: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.sliver_ns(node, sliver), *cmd]

    def ping(self, node: int, dst: str, *, count: int, interval: float = 0.2, sliver: int = 0, timeout: float = 60, realtime: bool = False, wait: int = 5) -> list[float]:
        """Round trips in ms of ``count`` pings from a sliver of ``node`` to ``dst`` (lost ones left out).

        ``realtime``: run ping SCHED_FIFO, so that on a busy host its own wake-up delay is not
        counted as network delay."""
        cmd = ["busybox", "ping", "-c", str(count), "-i", f"{interval:g}", "-W", str(wait), dst]
        if realtime:
            cmd = ["chrt", "-f", "5", *cmd]
        proc = subprocess.run(self.argv(node, sliver, cmd), capture_output=True, text=True, timeout=timeout)
        return [float(m) for m in _RTT.findall(proc.stdout)]

    def host_counters(self, ifname: str) -> tuple[int, int]:
        """(tx packets, tx bytes) of an interface in the host namespace."""
        with IPRoute(netns=self.host) as ipr:
            link = ipr.get_links(ifname=ifname)[0]
            stats = link.get_attr("IFLA_STATS64")
            return int(stats["tx_packets"]), int(stats["tx_bytes"])

    def host_veth(self, node: int, sliver: int = 0) -> str:
        return f"{self.token}v{node}s{sliver}"

    def rules(self, table: int) -> list[str]:
        from node_agent.wan.routing import rules_for

        with IPRoute(netns=self.host) as ipr:
            return rules_for(ipr, table)

    def links(self) -> list[str]:
        with IPRoute(netns=self.host) as ipr:
            return sorted(str(link.get_attr("IFLA_IFNAME")) for link in ipr.get_links())

    def sysctl(self, dev: str, key: str) -> str:
        out = subprocess.run(["ip", "netns", "exec", self.host, "cat", f"/proc/sys/net/ipv4/conf/{dev}/{key}"], capture_output=True, text=True)
        return out.stdout.strip()

    def close(self) -> None:
        for ns in reversed(self._ns):
            try:
                netns.remove(ns)
            except OSError:
                pass
        self._ns.clear()

    def leftovers(self) -> list[str]:
        return sorted(p.name for p in NETNS_DIR.glob(f"{self.token}*")) if NETNS_DIR.exists() else []

    def __enter__(self) -> WanBed:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
