"""Per-sliver uid ranges and the user namespace in config.json, without root."""

from __future__ import annotations

import pytest

from node_agent import userns
from node_agent.backends.runc import oci, rootfs


def test_each_sliver_gets_its_own_range_in_its_nodes_block() -> None:
    first = userns.sliver_host_id(64, "10.5.6.0/24", "10.5.6.2")
    assert first == 64 * 2**24 + 2 * 2**16
    ids = {userns.sliver_host_id(64, "10.5.6.0/24", f"10.5.6.{h}") for h in range(2, 255)}
    assert len(ids) == 253 and max(ids) + 2**16 <= 65 * 2**24  # disjoint, inside the node's block
    assert userns.sliver_host_id(65, "10.5.7.0/24", "10.5.7.2") >= 65 * 2**24  # the next node's block
    assert userns.sliver_host_id(127, "10.5.6.0/24", "10.5.6.255") + 2**16 <= 2**31


@pytest.mark.parametrize(
    ("block", "subnet", "address", "why"),
    [
        (0, "10.5.6.0/24", "10.5.6.2", "outside 1..127"),
        (128, "10.5.6.0/24", "10.5.6.2", "outside 1..127"),
        (64, "10.5.0.0/16", "10.5.1.2", "first 255 addresses"),
        (64, "10.5.6.0/24", "10.5.6.0", "first 255 addresses"),
    ],
)
def test_bad_blocks_and_addresses_are_refused(block: int, subnet: str, address: str, why: str) -> None:
    with pytest.raises(userns.UsernsError, match=why):
        userns.sliver_host_id(block, subnet, address)


def test_config_joins_the_agents_user_namespace_with_matching_maps() -> None:
    cfg = oci.ContainerConfig(
        hostname="h", args=("sh",), cgroups_path="/x", netns_path="/run/netns/n", cpu=1, memory=1 << 26, pids_limit=10,
        rootfs="/run/slicemesh/roots/r.abc", userns_path="/run/slicemesh/userns/n", host_id=5 << 24,
    )  # fmt: skip
    c = oci.make_config(cfg, 1)
    ns = {n["type"]: n.get("path") for n in c["linux"]["namespaces"]}
    assert ns["user"] == "/run/slicemesh/userns/n" and ns["network"] == "/run/netns/n"
    assert c["linux"]["uidMappings"] == c["linux"]["gidMappings"] == [{"containerID": 0, "hostID": 5 << 24, "size": 65536}]
    assert c["root"]["path"] == "/run/slicemesh/roots/r.abc"
    plain = oci.make_config(oci.ContainerConfig(**{**cfg.__dict__, "userns_path": None}), 1)
    assert "user" not in {n["type"] for n in plain["linux"]["namespaces"]} and "uidMappings" not in plain["linux"]


def test_rootfs_mount_points_are_unguessable() -> None:
    a, b = rootfs.new_root("p-s1"), rootfs.new_root("p-s1")
    assert a != b and a.startswith(str(rootfs.ROOTS_DIR / "p-s1.")) and len(a.rsplit(".", 1)[1]) == 32
