"""The host routes between simulated machines' bridges, and sends that traffic through the TUN.

    sliver A --eth0--> bridge A --(rule: iif bridge A -> table W)--> TUN --> delay daemon
    delay daemon --> TUN --(iif TUN: no rule, main table)--> bridge B --> sliver B

Table W holds one route per node subnet, all through the TUN; one rule per bridge sends what
arrives on it to table W. Packets the daemon writes back arrive with the TUN as incoming
interface, match no rule and follow the main table's connected route to the destination
bridge, so nothing loops. Traffic inside one node never leaves its bridge (it is switched,
not routed) and so is never delayed; traffic to the host's own addresses hits the local table
first.

Forwarding is switched on per interface (``conf/<dev>/forwarding``: IPv4 decides by the
incoming interface), not host-wide, and only on the bridges and the TUN; the previous values
are restored. Reverse-path filtering, even strict, lets the delayed packets through: the
kernel checks a packet's source as if it arrived on the interface the packet is leaving by,
so a packet leaving for bridge B is checked with bridge B's rule, whose table routes the
source back through the TUN it came from. (The TUN's own ``rp_filter`` is set to 0 anyway.)

All through netlink in-process (pyroute2); sysctls are file writes.
"""

from __future__ import annotations

import hashlib
import logging
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

log = logging.getLogger(__name__)

#: Rule priority of the "iif bridge -> table W" rules: after ``local`` (0), before ``main`` (32766).
RULE_PRIORITY = 20_000
RT_SCOPE_LINK = 253
ENOENT, ESRCH, ENODEV = 2, 3, 19
SYS_CONF = Path("/proc/sys/net/ipv4/conf")
TUN_MTU = 1500  # when there is no bridge to take it from
TUN_QUEUE_LEN = 4096  # packets the kernel holds for the daemon between reads


class RoutingError(Exception):
    pass


def table_id(prefix: str) -> int:
    """A routing table of our own per simulation prefix, clear of the reserved ids (<= 255)."""
    return 1_000_000 + int(hashlib.sha1(prefix.encode()).hexdigest()[:8], 16) % 1_000_000


def tun_name(prefix: str) -> str:
    """``<prefix[:8]>-wan``: bridges are ``<prefix[:8]>-<hex6>``, so it cannot clash with one."""
    return f"{prefix[:8]}-wan"


def read_sysctl(dev: str, key: str) -> str | None:
    try:
        return (SYS_CONF / dev / key).read_text().strip()
    except OSError:
        return None


def write_sysctl(dev: str, key: str, value: str) -> None:
    try:
        (SYS_CONF / dev / key).write_text(value)
    except OSError as exc:
        raise RoutingError(f"sysctl net.ipv4.conf.{dev}.{key}={value}: {exc.strerror}") from None


@dataclass
class Forwarding:
    """Per-interface forwarding switched on, with what to put back."""

    saved: dict[str, str] = field(default_factory=dict)

    def enable(self, devices: Iterable[str]) -> None:
        for dev in devices:
            old = read_sysctl(dev, "forwarding")
            if old is None:
                raise RoutingError(f"interface {dev} does not exist (is its simulated node up?)")
            self.saved.setdefault(dev, old)
            write_sysctl(dev, "forwarding", "1")

    def restore(self) -> None:
        for dev, old in self.saved.items():
            if read_sysctl(dev, "forwarding") is not None:  # a removed bridge has nothing to restore
                write_sysctl(dev, "forwarding", old)
        self.saved.clear()


@dataclass(frozen=True)
class RoutePlan:
    tun: str
    table: int
    bridges: tuple[str, ...]
    subnets: tuple[str, ...]
    priority: int = RULE_PRIORITY


class TunRouting:
    """Installs and removes a ``RoutePlan``; everything it added is removed by ``remove``."""

    def __init__(self, plan: RoutePlan, ipr: IPRoute | None = None) -> None:
        self.plan = plan
        self._own = ipr is None
        self.ipr = ipr or IPRoute()
        self.forwarding = Forwarding()
        self._rules: list[str] = []

    def install(self) -> None:
        p = self.plan
        try:
            sweep_rules(self.ipr, p.table)  # left by a daemon of this prefix that was killed
            found = self.ipr.link_lookup(ifname=p.tun)
            if not found:
                raise RoutingError(f"TUN {p.tun} is missing")
            idx = found[0]
            write_sysctl(p.tun, "rp_filter", "0")
            v6 = Path(f"/proc/sys/net/ipv6/conf/{p.tun}/disable_ipv6")
            if v6.exists():
                v6.write_text("1")  # before it is up: no router solicitations or other IPv6 chatter into the daemon
            self.forwarding.enable([p.tun, *p.bridges])
            self.ipr.link("set", index=idx, mtu=self._mtu(), txqlen=TUN_QUEUE_LEN, state="up")
            for subnet in p.subnets:
                self.ipr.route("replace", dst=subnet, oif=idx, table=p.table, scope=RT_SCOPE_LINK)
            for bridge in p.bridges:
                self.ipr.rule("add", family=socket.AF_INET, table=p.table, priority=p.priority, iifname=bridge)
                self._rules.append(bridge)
        except (NetlinkError, OSError) as exc:
            self.remove()
            raise RoutingError(f"routing through {p.tun}: {exc}") from None
        except RoutingError:
            self.remove()
            raise

    def _mtu(self) -> int:
        """The largest bridge MTU: a packet that crossed one bridge must fit through the TUN."""
        mtus = [int(link.get_attr("IFLA_MTU")) for b in self.plan.bridges for link in self.ipr.get_links(ifname=b)]
        return max(mtus, default=TUN_MTU)

    def remove(self) -> None:
        """Rules, routes, forwarding: each step goes on even if one before it failed."""
        p = self.plan
        for bridge in self._rules:
            _ignore_gone(self.ipr.rule, "del", family=socket.AF_INET, table=p.table, priority=p.priority, iifname=bridge)
        self._rules.clear()
        sweep_rules(self.ipr, p.table)
        for subnet in p.subnets:  # they go with the TUN; this covers a TUN that outlives us
            _ignore_gone(self.ipr.route, "del", dst=subnet, table=p.table)
        try:
            self.forwarding.restore()
        except RoutingError as exc:
            log.warning("%s", exc)
        if self._own:
            self.ipr.close()


def sweep_rules(ipr: IPRoute, table: int) -> int:
    """Delete every IPv4 rule that points at ``table``; returns how many."""
    gone = 0
    for rule in ipr.get_rules(family=socket.AF_INET):
        if rule.get_attr("FRA_TABLE") == table:
            attrs: dict[str, object] = {"family": socket.AF_INET, "table": table, "priority": rule.get_attr("FRA_PRIORITY") or 0}
            iif = rule.get_attr("FRA_IIFNAME")
            if iif:
                attrs["iifname"] = iif
            if _ignore_gone(ipr.rule, "del", **attrs):
                gone += 1
    return gone


def rules_for(ipr: IPRoute, table: int) -> list[str]:
    """The incoming interfaces of the rules pointing at ``table`` (for checks and tests)."""
    return sorted(str(r.get_attr("FRA_IIFNAME")) for r in ipr.get_rules(family=socket.AF_INET) if r.get_attr("FRA_TABLE") == table)


def _ignore_gone(op: Callable[..., object], *args: object, **kwargs: object) -> bool:
    """Run a netlink delete; True if it deleted, False if the thing was already gone."""
    try:
        op(*args, **kwargs)
        return True
    except NetlinkError as exc:
        if exc.code in (ENOENT, ESRCH, ENODEV):
            return False
        log.warning("netlink: %s", exc)
        return False
