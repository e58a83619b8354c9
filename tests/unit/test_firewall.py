"""The node firewall's pure parts: the operator's allow list and the nft script, without root."""

from __future__ import annotations

import pytest

from node_agent import firewall
from node_agent.firewall import HostService, parse_access, ruleset
from slices.errors import SpecError


def test_parse_access_accepts_ports_ranges_and_ping() -> None:
    got = parse_access(["tcp/53", "UDP/53", " tcp/8000-8099 ", "icmp/echo", "tcp/53"])
    assert got == (HostService("tcp", 53, 53), HostService("udp", 53, 53), HostService("tcp", 8000, 8099), HostService("icmp"))
    assert [str(s) for s in got] == ["tcp/53", "udp/53", "tcp/8000-8099", "icmp/echo"]
    assert parse_access([]) == ()
    assert parse_access(firewall.DEFAULT_ACCESS) == (HostService("icmp"),)


@pytest.mark.parametrize(
    ("entry", "why"),
    [
        ("ssh", "write tcp/PORT"),
        ("sctp/80", "write tcp/PORT"),
        ("tcp/", "must be a number"),
        ("tcp/http", "must be a number"),
        ("tcp/\u00b2", "must be a number"),  # a digit to str.isdigit, not to int()
        ("tcp/0", "1..65535"),
        ("tcp/70000", "1..65535"),
        ("udp/90-80", "LOW <= HIGH"),
        ("icmp/any", "only icmp/echo"),
    ],
)
def test_parse_access_refuses_with_the_field_named(entry: str, why: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_access(["tcp/22", entry])
    assert err.value.path == "sliver_host_access[1]"
    assert why in err.value.reason


def test_ruleset_closes_the_host_and_opens_only_what_is_listed() -> None:
    script = ruleset("smx-abc123", "10.7.8.1", parse_access(["tcp/53", "tcp/9000-9010", "udp/53", "icmp/echo"]))
    lines = [line.strip() for line in script.splitlines()]
    # replaced atomically: the table is created if missing, its rules flushed (its sets keep
    # their elements), then written in one transaction; or, as a fallback, deleted first
    assert lines[:5] == ["table inet smx-abc123", "flush table inet smx-abc123", "table bridge smx-abc123", "flush table bridge smx-abc123", "table inet smx-abc123 {"]
    anew = [line.strip() for line in ruleset("smx-abc123", "10.7.8.1", (), keep_sets=False).splitlines()]
    assert anew[:4] == ["table inet smx-abc123", "delete table inet smx-abc123", "table bridge smx-abc123", "delete table bridge smx-abc123"]
    body = lines[lines.index("chain from_slivers {") :]
    allowed = [
        "ip daddr 10.7.8.1 icmp type echo-request accept",
        "ip daddr 10.7.8.1 tcp dport { 53, 9000-9010 } accept",
        "ip daddr 10.7.8.1 udp dport { 53 } accept",
    ]
    start = body.index(allowed[0])
    assert body[start : start + 3] == allowed
    # replies to the host's own connections first; refusals (fast: reset / unreachable) last
    assert body.index("ct state established,related accept") < start
    assert body[start + 3 : start + 5] == ["meta l4proto tcp reject with tcp reset", "reject"]
    assert 'iifname "smx-abc123" jump from_slivers' in lines
    # forwarding: bridged sliver-to-sliver is judged by the bridge table, routed by the slice sets
    assert 'iifname "smx-abc123" oifname "smx-abc123" accept' in lines
    assert "table bridge smx-abc123 {" in lines and "type ipv4_addr . ipv4_addr" in lines


def test_ruleset_with_nothing_allowed_has_no_accept_for_new_traffic() -> None:
    script = ruleset("smx-abc123", "10.7.8.1", ())
    chain = script.split("chain from_slivers {")[1].split("}")[0]
    accepts = [line.strip() for line in chain.splitlines() if line.strip().endswith("accept")]
    assert accepts == ["ct state established,related accept"]


def test_table_names_must_be_nft_identifiers() -> None:
    with pytest.raises(firewall.FirewallError):
        ruleset("9bad-name", "10.0.0.1", ())
    with pytest.raises(firewall.FirewallError):
        ruleset('x"; flush ruleset; "', "10.0.0.1", ())


def test_routed_traffic_between_peers_passes_both_ways() -> None:
    """A simulated wide area routes between nodes' bridges: their subnets are each other's peers."""
    lines = [line.strip() for line in ruleset("smx-abc123", "10.7.8.1", ()).splitlines()]
    routed_out = lines[lines.index("chain from_slivers_routed {") : lines.index("chain to_slivers_routed {")]
    routed_in = lines[lines.index("chain to_slivers_routed {") : lines.index("chain refuse {")]
    # a managed sliver (one the agent placed in a slice) reaches only its pairs; others as before
    assert routed_out.index("ip saddr . ip daddr @pairs accept") < routed_out.index("ip saddr @managed ip daddr @peers goto refuse") < routed_out.index("ip daddr @peers accept")
    assert routed_in.index("ip daddr @managed goto refuse") < routed_in.index("ip saddr @peers accept")
    assert routed_out[-2] == routed_in[-2] == "goto refuse"
    script = firewall.peers_script(["smx-a", "smx-b"], ["10.100.0.0/24", "10.100.1.0/24"])
    assert script.splitlines() == [
        "flush set inet smx-a peers",
        "add element inet smx-a peers { 10.100.0.0/24, 10.100.1.0/24 }",
        "flush set inet smx-b peers",
        "add element inet smx-b peers { 10.100.0.0/24, 10.100.1.0/24 }",
    ]
    assert firewall.peers_script(["smx-a"], []).splitlines() == ["flush set inet smx-a peers"]
    with pytest.raises(ValueError):
        firewall.peers_script(["smx-a"], ["10.0.0.0/24; flush ruleset"])


def test_nat_masquerades_only_what_leaves_for_the_world() -> None:
    plain = ruleset("smx-abc123", "10.7.8.1", ())
    assert "masquerade" not in plain and "ip saddr 10.7.8.0/24 accept" not in plain
    lines = [line.strip() for line in ruleset("smx-abc123", "10.7.8.1", (), subnet="10.7.8.0/24", nat=True).splitlines()]
    assert 'ip saddr 10.7.8.0/24 ip daddr != 10.7.8.0/24 ip daddr != @peers ip daddr != @slivers oifname != "smx-abc123" masquerade' in lines
    routed_out = lines[lines.index("chain from_slivers_routed {") : lines.index("chain to_slivers_routed {")]
    # the world after every sliver rule: NAT never opens another slice's sliver
    assert routed_out.index("ip saddr @managed ip daddr @slivers goto refuse") < routed_out.index("ip saddr 10.7.8.0/24 accept")


def test_slices_script_fills_both_tables_in_one_transaction() -> None:
    script = firewall.slices_script("smx-a", [("10.1.0.2", "10.2.0.2")], ["10.1.0.2"], ["10.1.0.2"], [])
    assert script.splitlines() == [
        "flush set inet smx-a pairs",
        "add element inet smx-a pairs { 10.1.0.2 . 10.2.0.2 }",
        "flush set inet smx-a open",
        "add element inet smx-a open { 10.1.0.2 }",
        "flush set inet smx-a managed",
        "add element inet smx-a managed { 10.1.0.2 }",
        "flush set inet smx-a slivers",
        "flush set bridge smx-a pairs",
        "add element bridge smx-a pairs { 10.1.0.2 . 10.2.0.2 }",
        "flush set bridge smx-a open",
        "add element bridge smx-a open { 10.1.0.2 }",
        "flush set bridge smx-a managed",
        "add element bridge smx-a managed { 10.1.0.2 }",
        "flush set bridge smx-a slivers",
        "flush set bridge smx-a ports",
        "flush set bridge smx-a guarded",
    ]
    with pytest.raises(ValueError):
        firewall.slices_script("smx-a", [], ["10.0.0.1; flush ruleset"], [], [])


def test_each_slivers_port_is_tied_to_its_address() -> None:
    script = firewall.slices_script("smx-a", [], [], ["10.1.0.2"], [], [("smx-v1", "10.1.0.2"), ("smx-t1", "10.1.0.2")])
    assert script.splitlines()[-2:] == [
        'add element bridge smx-a ports { "smx-t1" . 10.1.0.2, "smx-v1" . 10.1.0.2 }',
        'add element bridge smx-a guarded { "smx-t1", "smx-v1" }',
    ]
    lines = [line.strip() for line in ruleset("smx-a", "10.1.0.1", ()).splitlines()]
    guard = lines[lines.index("chain prerouting {") :][:7]
    assert guard[2:] == ["iifname != @guarded accept", "ether type ip iifname . ip saddr @ports accept", "ether type arp iifname . arp saddr ip @ports accept", "ether type != ip6 drop", "}"]
    for bad in ('smx"; flush ruleset', "a-name-far-too-long-for-linux", ""):
        with pytest.raises(firewall.FirewallError):
            firewall.slices_script("smx-a", [], [], [], [], [(bad, "10.1.0.2")])
    with pytest.raises(ValueError):
        firewall.slices_script("smx-a", [], [], [], [], [("smx-v1", "10.1.0.2; flush ruleset")])


def test_a_change_to_the_sets_is_written_as_that_change_only() -> None:
    before = firewall.slice_sets([("10.1.0.2", "10.2.0.2"), ("10.2.0.2", "10.1.0.2")], [], ["10.1.0.2"], ["10.2.0.2"], [("smx-v1", "10.1.0.2")])
    now = firewall.slice_sets([("10.1.0.2", "10.2.0.3"), ("10.2.0.3", "10.1.0.2")], [], ["10.1.0.2"], ["10.2.0.3"], [("smx-v1", "10.1.0.2")])
    lines = firewall.sets_script("smx-a", now, before).splitlines()
    for family in ("inet", "bridge"):
        assert f"delete element {family} smx-a pairs {{ 10.1.0.2 . 10.2.0.2, 10.2.0.2 . 10.1.0.2 }}" in lines
        assert f"add element {family} smx-a pairs {{ 10.1.0.2 . 10.2.0.3, 10.2.0.3 . 10.1.0.2 }}" in lines
        assert f"delete element {family} smx-a slivers {{ 10.2.0.2 }}" in lines and f"add element {family} smx-a slivers {{ 10.2.0.3 }}" in lines
    assert len(lines) == 8 and not any("flush" in line or "managed" in line or "ports" in line for line in lines), lines
    assert firewall.sets_script("smx-a", now, now) == "", "nothing changed: nothing to run"
    whole = firewall.sets_script("smx-a", now)
    assert whole == firewall.slices_script("smx-a", [("10.1.0.2", "10.2.0.3"), ("10.2.0.3", "10.1.0.2")], [], ["10.1.0.2"], ["10.2.0.3"], [("smx-v1", "10.1.0.2")])
    assert whole.count("flush set") == 10, "with nothing known to be written: every set whole"


def test_addresses_are_taken_as_they_are_only_when_canonical() -> None:
    sets = firewall.slice_sets([], ["10.1.0.2"], [], ["192.168.0.1"], [])
    assert sets["inet", "open"] == {"10.1.0.2"} and sets["bridge", "slivers"] == {"192.168.0.1"}
    for bad in ("10.1.0.2 }; flush ruleset", "10.1.0.256", "010.1.0.2", "10.1.0"):
        with pytest.raises(ValueError):
            firewall.slice_sets([], [bad], [], [], [])
