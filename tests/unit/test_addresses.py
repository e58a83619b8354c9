"""The node's address pool: one address per sliver, kept across restarts, freed on release."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from node_agent.addresses import AddressPool, PoolError, allocate

pytestmark = pytest.mark.timeout(10)
SUBNET = "10.77.3.0/24"


def test_allocation_is_deterministic_skips_the_gateway_and_probes_past_taken() -> None:
    first = allocate(SUBNET, [], "s1")
    assert allocate(SUBNET, [], "s1") == first
    assert first != "10.77.3.1" and ipaddress.ip_address(first) in ipaddress.ip_network(SUBNET)
    second = allocate(SUBNET, [first], "s1")
    assert second != first
    hosts = [str(h) for h in ipaddress.ip_network("10.0.0.0/29").hosts()]  # .1 gateway, .2-.6 free
    assert allocate("10.0.0.0/29", hosts[1:5], "x") == hosts[5]
    with pytest.raises(PoolError, match="full"):
        allocate("10.0.0.0/29", hosts[1:], "x")


def test_addresses_persist_are_unique_and_are_released(tmp_path: Path) -> None:
    pool = AddressPool(tmp_path / "addresses.json", SUBNET)
    got = {f"s{i}": pool.allocate(f"s{i}") for i in range(50)}
    assert len(set(got.values())) == 50
    assert pool.allocate("s7") == got["s7"], "idempotent"
    again = AddressPool(tmp_path / "addresses.json", SUBNET)  # an agent restart
    assert again.allocated() == got
    again.release("s7")
    again.release("never-had-one")
    assert again.get("s7") is None
    assert "s7" not in AddressPool(tmp_path / "addresses.json", SUBNET).allocated()


def test_adopt_records_an_existing_address(tmp_path: Path) -> None:
    pool = AddressPool(tmp_path / "a.json", SUBNET)
    pool.adopt("old", "10.77.3.9")
    assert pool.get("old") == "10.77.3.9"
    assert "10.77.3.9" not in {pool.allocate(f"n{i}") for i in range(100)}


def test_an_unreadable_pool_is_refused_and_left_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "addresses.json"
    path.write_text("{not json")
    with pytest.raises(PoolError, match="unreadable"):
        AddressPool(path, SUBNET)
    assert path.read_text() == "{not json"


@pytest.mark.parametrize("subnet", ["10.77.3.0/24", "10.0.0.0/29", "10.9.0.0/30", "10.9.0.0/31", "10.5.0.0/20"])
def test_the_probe_walks_the_hosts_after_the_gateway_in_order(subnet: str) -> None:
    """Computed by arithmetic (it is on a start-up's path), it is the list of hosts without the gateway."""
    hosts = [str(h) for h in ipaddress.ip_network(subnet).hosts()][1:]
    n, start = len(hosts), hosts.index(allocate(subnet, [], "probe"))
    order = [hosts[(start + k) % n] for k in range(min(n, 40))]
    assert [allocate(subnet, order[:k], "probe") for k in range(len(order))] == order


def test_an_unsaved_allocation_is_written_by_flush_once(tmp_path: Path) -> None:
    """``save=False`` (a batch, or a container start-up writing the pool while runc starts):
    the file follows only at ``flush``, and a flush with nothing new writes nothing."""
    path = tmp_path / "pool.json"
    pool = AddressPool(path, "10.9.0.0/24")
    a = pool.allocate("s1", save=False)
    b = pool.allocate("s2", save=False)
    assert pool.get("s1") == a and not path.exists()
    pool.flush()
    assert AddressPool(path, "10.9.0.0/24").allocated() == {"s1": a, "s2": b}
    path.unlink()
    pool.flush()
    assert not path.exists()  # nothing new since the last write
    assert pool.allocate("s1") == a and not path.exists()  # already allocated: nothing to write
