"""What slivers may reach on their host: one nftables table per node bridge.

Why: a sliver's default route is the bridge address, which is the host itself, so without a
filter every service on the host listening on 0.0.0.0 (the controller's ROUTER, an SSH
daemon, a metrics endpoint) is one TCP connection away from every sliver. That is how a
60-line ZMTP client in a ``host``-image sliver listed every slice, deleted a neighbour's and
registered as another node. The host is therefore closed to slivers except for what the
operator lists (``sliver_host_access``; by default only ICMP echo to the gateway).

The table, ``inet <bridge name>`` (so a prefix finds every table of a test run or a
simulated cluster), holds:

* ``input`` -> ``from_slivers``: packets from the bridge to any address of this host (the
  gateway, 127.0.0.1 cannot be routed there anyway, eth0's address, IPv6 link-local ones).
  Replies to connections the host opened pass; IPv6 neighbour discovery passes (so that an
  IPv6 connect is refused at once as well); the allowed gateway services pass; TCP gets a
  reset and everything else an ICMP port-unreachable, so a refused connect fails at once
  instead of timing out; other broadcast and multicast is dropped.
* ``forward``: bridged sliver-to-sliver frames (which pass this hook because the kernel's
  ``br_netfilter`` is on here) are accepted here and judged by the bridge table; whatever a
  sliver sends *through* the host to another network (another node's bridge, the uplink)
  goes to ``from_slivers_routed``: a same-slice pair or two open slices pass, another
  sliver is refused, the world passes when ``sliver_nat`` is on (masqueraded in
  ``postrouting``), anything else is refused. New connections from elsewhere *to* slivers
  are refused unless the slice sets allow them (refused, not dropped: when two
  nodes' tables see one packet, a drop in either would leave the sender waiting for a
  timeout).
* ``peers``, a set of subnets, empty but in a simulation: the wide-area emulator
  (``node_agent/wan/``) routes between the simulated machines' bridges, so while it runs it
  puts their subnets here (``open_peers``) and routed traffic between them passes both ways.

The ``bridge`` table of the same name judges frames switched between two slivers of this
node by the same slice sets, and ties each sliver's port (a veth's host end, a TAP) to its
sliver's address (``ports``, ``guarded``): from a sliver's port only IPv4 and ARP from that
address pass, and IPv6; nothing else (no other ether type, no VLAN tag around a packet the
rules would not see into). Every rule above trusts source addresses, and a VM guest's root
can set any and send any frame (a container sliver cannot: it has neither CAP_NET_ADMIN nor
CAP_NET_RAW). IPv6 from a sliver's port is not switched to another port: slivers speak IPv4, and the link-local
addresses the kernel gives every interface would pass by every set.

Confinement is the node's, not a backend's: a VM's TAP sits on the same bridge, so its
packets meet the same table as a container's veth.

Applied with one ``nft -f -`` per node set-up (not per sliver) as one transaction that
replaces every rule atomically, so re-applying with changed settings is idempotent and never
leaves the host open in between. The sets keep their elements (``flush table`` empties
chains, not sets): a restarted agent's slivers stay apart, and their ports guarded, until its
first reconcile writes the sets again. A table nft will not take that way (a set of another
type, left by another version) is deleted and made anew, with empty sets. Tables removed
while the agent runs (a flushed ruleset) are found by its check every ``CHECK_EVERY`` s
(``present``) and made again with their sets (``MachineResources.check_firewall``).
"""

from __future__ import annotations

import ipaddress
import re
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from slices.errors import SliceMeshError, SpecError
from slices.model import IPV4

PROTOCOLS = ("tcp", "udp")
CHECK_EVERY = 10.0  # seconds between an agent's checks that its node's tables are there (``present``)
#: What a sliver may reach on the host unless the operator says otherwise.
DEFAULT_ACCESS = ("icmp/echo",)
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
_PORT = re.compile(r"^[0-9]{1,5}$")
_IFNAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")


class FirewallError(SliceMeshError):
    """The node's table cannot be installed: the agent must not run slivers on an open host."""


@dataclass(frozen=True)
class HostService:
    """One allowed destination on the gateway: ``tcp``/``udp`` ports ``low..high``, or ICMP echo."""

    proto: str
    low: int = 0
    high: int = 0

    def __str__(self) -> str:
        if self.proto == "icmp":
            return "icmp/echo"
        return f"{self.proto}/{self.low}" if self.low == self.high else f"{self.proto}/{self.low}-{self.high}"


def parse_access(entries: Iterable[str], field: str = "sliver_host_access") -> tuple[HostService, ...]:
    """``["tcp/53", "udp/53", "tcp/8000-8099", "icmp/echo"]`` -> services; a clear error otherwise."""
    out: list[HostService] = []
    for i, raw in enumerate(entries):
        text = str(raw).strip().lower()
        proto, _, ports = text.partition("/")
        where = f"{field}[{i}]"
        if proto == "icmp":
            if ports != "echo":
                raise SpecError(where, f"{raw!r}: only icmp/echo (ping to the gateway) can be allowed")
            out.append(HostService("icmp"))
            continue
        if proto not in PROTOCOLS:
            raise SpecError(where, f"{raw!r}: write tcp/PORT, udp/PORT, tcp/LOW-HIGH or icmp/echo")
        low_s, _, high_s = ports.partition("-")
        if not _PORT.match(low_s) or (high_s and not _PORT.match(high_s)):
            raise SpecError(where, f"{raw!r}: the port must be a number or a range LOW-HIGH")
        low, high = int(low_s), int(high_s or low_s)
        if not 1 <= low <= high <= 65535:
            raise SpecError(where, f"{raw!r}: ports are 1..65535, LOW <= HIGH")
        out.append(HostService(proto, low, high))
    return tuple(dict.fromkeys(out))  # duplicates are harmless but make the ruleset noisy


DEFAULT_SERVICES = parse_access(DEFAULT_ACCESS)


def table_name(bridge: str) -> str:
    if not _NAME.match(bridge):
        raise FirewallError(f"{bridge!r} cannot name an nftables table (start with a letter; letters, digits, _ . -)")
    return bridge


def ruleset(bridge: str, gateway: str, access: Sequence[HostService], *, subnet: str | None = None, nat: bool = False, keep_sets: bool = True) -> str:
    """The ``nft -f`` script that (re)creates the node's tables; pure, so it is unit-tested.

    ``subnet`` and ``nat``: masquerade what the slivers of ``subnet`` send to anything that is
    not a sliver (``sliver_nat``) and let it through ``forward``. ``keep_sets``: flush the
    tables (their rules go, their sets' elements stay) instead of deleting them."""
    table = table_name(bridge)
    allowed: list[str] = []
    if any(s.proto == "icmp" for s in access):
        allowed.append(f"ip daddr {gateway} icmp type echo-request accept")
    for proto in PROTOCOLS:
        ports = [f"{s.low}" if s.low == s.high else f"{s.low}-{s.high}" for s in access if s.proto == proto]
        if ports:
            allowed.append(f"ip daddr {gateway} {proto} dport {{ {', '.join(ports)} }} accept")
    refuse = ["meta l4proto tcp reject with tcp reset", "reject"]
    between = ["ip saddr . ip daddr @pairs accept", "ip saddr @open ip daddr @open accept"]
    world = [f"ip saddr {subnet} accept"] if nat and subnet else []
    clear = "flush" if keep_sets else "delete"
    lines = [
        f"table inet {table}",  # create it if missing, so that the flush or delete below cannot fail
        f"{clear} table inet {table}",
        f"table bridge {table}",
        f"{clear} table bridge {table}",
        f"table inet {table} {{",
        *_slice_sets(),
        "\tset peers {",
        "\t\ttype ipv4_addr",
        "\t\tflags interval",
        "\t}",
        "\tchain input {",
        "\t\ttype filter hook input priority filter; policy accept;",
        f'\t\tiifname "{bridge}" jump from_slivers',
        "\t}",
        "\tchain from_slivers {",
        "\t\tct state established,related accept",
        "\t\tct state invalid drop",
        "\t\ticmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } accept",  # so IPv6 is refused fast too
        "\t\tmeta pkttype != host drop",
        *(f"\t\t{rule}" for rule in allowed + refuse),
        "\t}",
        "\tchain forward {",
        "\t\ttype filter hook forward priority filter; policy accept;",
        f'\t\tiifname "{bridge}" oifname "{bridge}" accept',  # switched, judged by the bridge table
        f'\t\tiifname "{bridge}" jump from_slivers_routed',
        f'\t\toifname "{bridge}" jump to_slivers_routed',
        "\t}",
        "\tchain from_slivers_routed {",
        "\t\tct state established,related accept",
        *(f"\t\t{rule}" for rule in between),
        *(f"\t\tip saddr @managed ip daddr @{name} goto refuse" for name in ("peers", "managed", "slivers")),
        "\t\tip daddr @peers accept",  # slivers of no slice the agent knows (backends alone)
        *(f"\t\t{rule}" for rule in world),
        "\t\tgoto refuse",
        "\t}",
        "\tchain to_slivers_routed {",
        "\t\tct state established,related accept",
        *(f"\t\t{rule}" for rule in between),
        "\t\tip daddr @managed goto refuse",
        "\t\tip saddr @peers accept",
        "\t\tgoto refuse",
        "\t}",
        "\tchain refuse {",
        *(f"\t\t{rule}" for rule in refuse),
        "\t}",
        *(_nat_chain(bridge, subnet) if nat and subnet else []),
        "}",
        # Frames switched between two ports of the bridge never reach the inet hooks unless
        # br_netfilter is loaded: the bridge family sees them always. It sees every bridge's
        # (``meta ibrname`` is not supported here), but matches only this node's addresses.
        f"table bridge {table} {{",
        *_slice_sets(),
        *_port_sets(),
        # A sliver's port speaks IPv4 and ARP from its own address only, and IPv6 (judged in
        # ``forward`` and ``from_slivers``): every rule above and below trusts the source
        # address, and a VM guest's root can set any and send any frame, a VLAN-tagged one
        # included (a container sliver has no CAP_NET_ADMIN or CAP_NET_RAW). Ports of no
        # sliver are left alone.
        "\tchain prerouting {",
        "\t\ttype filter hook prerouting priority filter; policy accept;",
        "\t\tiifname != @guarded accept",
        "\t\tether type ip iifname . ip saddr @ports accept",
        "\t\tether type arp iifname . arp saddr ip @ports accept",
        "\t\tether type != ip6 drop",  # no other ether type, no 802.1Q tag around a spoofed packet
        "\t}",
        "\tchain forward {",
        "\t\ttype filter hook forward priority filter; policy accept;",
        "\t\tiifname @guarded ether type ip6 drop",  # slivers speak IPv4: no link-local IPv6 past every set
        "\t\tether type != ip accept",  # ARP
        *(f"\t\t{rule}" for rule in between),
        "\t\tip saddr @managed drop",
        "\t\tip daddr @managed drop",
        "\t}",
        "}",
    ]
    return "\n".join(lines) + "\n"


def _slice_sets() -> list[str]:
    """The sets the agent fills (``slices_script``): same-slice address pairs, slivers of open
    slices, this node's managed slivers, and every other sliver address it knows."""
    out = ["\tset pairs {", "\t\ttype ipv4_addr . ipv4_addr", "\t}"]
    for name in ("open", "managed", "slivers"):
        out += [f"\tset {name} {{", "\t\ttype ipv4_addr", "\t}"]
    return out


def _port_sets() -> list[str]:
    """The bridge table's sets the agent fills: each sliver's port with its one address, and
    the ports so guarded."""
    return ["\tset ports {", "\t\ttype ifname . ipv4_addr", "\t}", "\tset guarded {", "\t\ttype ifname", "\t}"]


def _nat_chain(bridge: str, subnet: str) -> list[str]:
    """Masquerade what slivers send to anything that is not a sliver, through any interface
    but the bridge (``sliver_nat``)."""
    net = ipaddress.ip_network(subnet)
    return [
        "\tchain postrouting {",
        "\t\ttype nat hook postrouting priority srcnat; policy accept;",
        f'\t\tip saddr {net} ip daddr != {net} ip daddr != @peers ip daddr != @slivers oifname != "{bridge}" masquerade',
        "\t}",
    ]


#: A node's slice and port sets as written: (family, set) -> its elements as nft reads them.
SetValues = dict[tuple[str, str], frozenset[str]]
_SLICE_SETS = ("pairs", "open", "managed", "slivers")
_V4 = re.compile(IPV4)


def _addr(value: str) -> str:
    """An IPv4 address as nft reads it: a canonical dotted quad as it is (what the wire and the
    pool give: no call to ``ipaddress`` for each of 20,000 pairs), else through ``ipaddress``,
    which refuses anything that is not an address."""
    return value if _V4.fullmatch(value) else str(ipaddress.ip_address(value))


def slice_sets(
    pairs: Iterable[tuple[str, str]], open_: Iterable[str], managed: Iterable[str], slivers: Iterable[str], ports: Iterable[tuple[str, str]] = ()
) -> SetValues:
    """The values of the node's slice sets, in both tables, and of the bridge table's ports
    (``ports``: (interface, its sliver's address)) (pure; refuses what is not an address or
    an interface name)."""
    values = {
        "pairs": frozenset(f"{_addr(a)} . {_addr(b)}" for a, b in pairs),
        "open": frozenset(_addr(a) for a in open_),
        "managed": frozenset(_addr(a) for a in managed),
        "slivers": frozenset(_addr(a) for a in slivers),
    }
    out: SetValues = {(family, name): values[name] for family in ("inet", "bridge") for name in _SLICE_SETS}
    port_list = {(_port(name), _addr(addr)) for name, addr in ports}
    out["bridge", "ports"] = frozenset(f'"{n}" . {a}' for n, a in port_list)
    out["bridge", "guarded"] = frozenset(f'"{n}"' for n, _ in port_list)
    return out


def sets_script(bridge: str, now: SetValues, before: SetValues | None = None) -> str:
    """The ``nft -f`` script that brings the sets from ``before`` (as last written) to ``now``:
    only the elements that changed, so a change of one address in a slice of 10,000 is a
    line, not 40,000 elements again (~0.5 s of script and nft); with no ``before``, each set
    flushed and filled whole (pure)."""
    table = table_name(bridge)
    lines = []
    for (family, name), items in now.items():
        if before is None:
            if name != "guarded":  # the ports are flushed together, then filled (below)
                lines.append(f"flush set {family} {table} {name}")
            if name == "ports":
                lines.append(f"flush set {family} {table} guarded")
            if items and name not in ("ports", "guarded"):
                lines.append(f"add element {family} {table} {name} {{ {', '.join(sorted(items))} }}")
            continue
        old = before.get((family, name), frozenset())
        if gone := old - items:
            lines.append(f"delete element {family} {table} {name} {{ {', '.join(sorted(gone))} }}")
        if new := items - old:
            lines.append(f"add element {family} {table} {name} {{ {', '.join(sorted(new))} }}")
    if before is None:
        for name in ("ports", "guarded"):
            if now["bridge", name]:
                lines.append(f"add element bridge {table} {name} {{ {', '.join(sorted(now['bridge', name]))} }}")
    return "\n".join(lines) + "\n" if lines else ""


def slices_script(
    bridge: str, pairs: Iterable[tuple[str, str]], open_: Iterable[str], managed: Iterable[str], slivers: Iterable[str], ports: Iterable[tuple[str, str]] = ()
) -> str:
    """The ``nft -f`` script that fills the slice sets of both of the node's tables, and the
    bridge table's ports, whole (pure)."""
    return sets_script(bridge, slice_sets(pairs, open_, managed, slivers, ports))


def _port(name: str) -> str:
    """An interface name as nft reads it inside quotes (the agent makes them: netdev.py)."""
    if not _IFNAME.match(name):
        raise FirewallError(f"{name!r} is not an interface name")
    return name


def set_slices(bridge: str, now: SetValues, before: SetValues | None = None) -> None:
    """Bring the slice and port sets from ``before`` to ``now`` in one transaction (a packet
    sees the old sets or the new)."""
    script = sets_script(bridge, now, before)
    if script:
        _nft(script)


def require_nft() -> None:
    """Refuse to set up a node on a host without ``nft`` (before anything is made)."""
    if shutil.which("nft") is None:
        raise FirewallError("nft is not installed (Debian package nftables): slivers would reach every host service")


def _nft(script: str) -> None:
    require_nft()
    proc = subprocess.run(["nft", "-f", "-"], input=script, capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise FirewallError(f"nft failed: {proc.stderr.strip()[:500]}")


def install(bridge: str, gateway: str, access: Sequence[HostService], *, subnet: str | None = None, nat: bool = False) -> None:
    """Create the node's tables, or atomically replace their rules (their sets keep what they
    hold; new tables' sets start empty)."""
    try:
        _nft(ruleset(bridge, gateway, access, subnet=subnet, nat=nat))
    except FirewallError:  # tables of another version nft cannot amend: made anew, in one transaction too
        _nft(ruleset(bridge, gateway, access, subnet=subnet, nat=nat, keep_sets=False))


def remove(bridge: str) -> None:
    """Delete the node's table; a no-op when it is already gone."""
    table = table_name(bridge)
    _nft(f"table inet {table}\ndelete table inet {table}\ntable bridge {table}\ndelete table bridge {table}\n")


def peers_script(bridges: Sequence[str], subnets: Sequence[str]) -> str:
    """The ``nft -f`` script that makes ``subnets`` the peers of each bridge's table (pure)."""
    lines = []
    for bridge in bridges:
        table = table_name(bridge)
        lines.append(f"flush set inet {table} peers")
        if subnets:
            lines.append(f"add element inet {table} peers {{ {', '.join(str(ipaddress.ip_network(s)) for s in subnets)} }}")
    return "\n".join(lines) + "\n"


def open_peers(bridges: Sequence[str], subnets: Sequence[str]) -> list[str]:
    """Let slivers on ``bridges`` and ``subnets`` reach each other through the host (a simulated
    wide area); bridges without a table of ours are left alone. Returns the bridges changed."""
    have = set(tables())
    ours = [b for b in bridges if b in have]
    if ours:
        _nft(peers_script(ours, subnets))
    return ours


def close_peers(bridges: Sequence[str]) -> None:
    """Empty the peers of each bridge whose table still exists (the simulation stopped)."""
    open_peers(bridges, [])


def present(bridge: str) -> bool:
    """Whether both of the node's tables exist (a flushed ruleset, or a firewall service that
    loaded its own, removes them while the agent runs)."""
    table = table_name(bridge)
    listed = _listed()
    return listed is not None and {("inet", table), ("bridge", table)} <= set(listed)


def tables(prefix: str = "") -> list[str]:
    """Names of the ``inet`` tables starting with ``prefix`` (tests, clean-up)."""
    return [name for family, name in _listed() or [] if family == "inet" and name.startswith(prefix)]


def _listed() -> list[tuple[str, str]] | None:
    """(family, name) of every table on the host, in nft's order; None if nft failed."""
    proc = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        return None
    return [(words[1], words[2]) for words in (line.split() for line in proc.stdout.splitlines()) if len(words) == 3 and words[0] == "table"]
