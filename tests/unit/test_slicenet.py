"""Slices as networks: who may talk to whom, /etc/hosts, resolv.conf, and overlapping subnets."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.peers import SubnetIndex
from node_agent.slicenet import SliceNet, check_resolvers, host_nameservers
from slices.protocol import Peer
from slices.spec import SpecErrors, parse_spec

PEERS = [Peer(sliver="pair-1", slice="pair", address="10.1.0.2"), Peer(sliver="pair-2", slice="pair", address="10.2.0.2"), Peer(sliver="web-1", slice="web", address="10.2.0.3")]


def test_pairs_join_local_slivers_to_their_slice_only() -> None:
    sn = SliceNet()
    assert sn.update(PEERS, [], {"pair-1": ("pair", "10.1.0.2"), "web-2": ("web", "10.1.0.3")})
    assert sn.pairs() == {("10.1.0.2", "10.2.0.2"), ("10.2.0.2", "10.1.0.2"), ("10.1.0.3", "10.2.0.3"), ("10.2.0.3", "10.1.0.3")}
    assert sn.managed() == {"10.1.0.2", "10.1.0.3"}
    assert sn.open_addresses() == set()
    assert not sn.update(PEERS, [], {"pair-1": ("pair", "10.1.0.2"), "web-2": ("web", "10.1.0.3")})  # nothing changed
    assert sn.update(PEERS, ["pair", "web"], {"pair-1": ("pair", "10.1.0.2"), "web-2": ("web", "10.1.0.3")})
    assert sn.open_addresses() == {"10.1.0.2", "10.2.0.2", "10.2.0.3", "10.1.0.3"}


def test_hosts_names_the_slice_peers_and_itself() -> None:
    sn = SliceNet()
    sn.update(PEERS, [], {"pair-1": ("pair", "10.1.0.2")})
    hosts = sn.hosts("pair-1", "pair", "10.1.0.2").splitlines()
    assert hosts[0].startswith("127.0.0.1\tlocalhost")
    assert "10.1.0.2\tpair-1 pair" in hosts and "10.2.0.2\tpair-2" in hosts
    assert not any("web" in line for line in hosts)  # another slice's slivers are not named


def test_resolvers_from_settings_or_the_host(tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text("# x\nnameserver 127.0.0.53\nnameserver 10.255.255.53\nnameserver ::1\nnameserver bogus\nsearch lan\n")
    assert host_nameservers(conf) == ["10.255.255.53"]  # loopback would be the sliver's own
    assert host_nameservers(tmp_path / "missing") == []
    assert SliceNet(resolvers=("9.9.9.9",)).resolv_conf() == "nameserver 9.9.9.9\n"
    assert check_resolvers([" 1.1.1.1"]) == ("1.1.1.1",)
    with pytest.raises(ValueError, match="sliver_resolvers"):
        check_resolvers(["dns.example"])


def test_network_open_to_slices_in_the_spec() -> None:
    base = {"name": "pair", "description": "d"}
    assert parse_spec(base).open_to_slices is False
    assert parse_spec({**base, "network": {"open_to_slices": True}}).open_to_slices is True
    with pytest.raises(SpecErrors, match=r"network\.open_to_slices"):
        parse_spec({**base, "network": {"open_to_slices": "yes"}})
    with pytest.raises(SpecErrors, match="network"):
        parse_spec({**base, "network": {"open": True}})


def test_overlapping_node_subnets_are_found() -> None:
    idx = SubnetIndex()
    idx.add("a", "10.1.0.0/24")
    assert idx.clash("b", "10.1.0.0/24") == "a"
    assert idx.clash("b", "10.1.0.128/25") == "a"  # inside a's
    assert idx.clash("b", "10.0.0.0/8") == "a"  # holds a's
    assert idx.clash("b", "10.2.0.0/24") is None
    assert idx.clash("a", "10.1.0.0/24") is None  # a itself, registering again
    idx.add("a", "10.3.0.0/24")  # a moved: its old subnet is free
    assert idx.clash("b", "10.1.0.0/24") is None and idx.clash("b", "10.0.0.0/8") == "a"
