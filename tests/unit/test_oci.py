"""config.json generation, both cgroup forms, without root or runc."""

from __future__ import annotations

import pytest

from node_agent.backends.runc import oci
from node_agent.backends.runc.oci import map_state
from node_agent.cgroup_limits import Limits, shares_to_weight, v1_files
from node_agent.machine_resources import sliver_key

CFG = oci.ContainerConfig(
    hostname="myslice", args=("sh",), cgroups_path="/slicemesh/n1/s1", netns_path="/run/netns/x",
    cpu=0.5, memory=64 << 20, pids_limit=100, env={"A": "1"}, ro_binds=(("/usr", "/usr"),),
)  # fmt: skip


def test_v1_resources() -> None:
    c = oci.make_config(CFG, 1)
    r = c["linux"]["resources"]
    assert r["cpu"] == {"quota": 50_000, "period": 100_000, "shares": 512}
    assert r["memory"] == {"limit": 64 << 20, "swap": 64 << 20}
    assert r["pids"] == {"limit": 100}
    assert "unified" not in r
    assert c["linux"]["cgroupsPath"] == "/slicemesh/n1/s1"


def test_v2_unified_form() -> None:
    r = oci.make_config(CFG, 2)["linux"]["resources"]
    assert r["unified"] == {
        "cpu.max": "50000 100000", "cpu.weight": str(shares_to_weight(512)),
        "memory.max": str(64 << 20), "memory.swap.max": "0", "pids.max": "100",
    }  # fmt: skip
    assert "cpu" not in r and "memory" not in r and "pids" not in r


def test_without_swap_accounting_no_swap_limit() -> None:
    cfg = oci.ContainerConfig(**{**CFG.__dict__, "swap_accounting": False})
    assert "swap" not in oci.make_config(cfg, 1)["linux"]["resources"]["memory"]
    assert "memory.swap.max" not in oci.make_config(cfg, 2)["linux"]["resources"]["unified"]


def test_namespaces_hostname_and_hardening() -> None:
    c = oci.make_config(CFG, 1)
    ns = {n["type"]: n.get("path") for n in c["linux"]["namespaces"]}
    assert ns == {"pid": None, "ipc": None, "uts": None, "mount": None, "network": "/run/netns/x"}
    assert c["hostname"] == "myslice"
    p = c["process"]
    assert p["noNewPrivileges"] is True
    assert set(p["capabilities"]["bounding"]) <= {"CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"}
    assert "/proc/kcore" in c["linux"]["maskedPaths"] and "/proc/sys" in c["linux"]["readonlyPaths"]
    assert "A=1" in p["env"] and "HOSTNAME=myslice" in p["env"]
    binds = [m for m in c["mounts"] if m["type"] == "bind"]
    assert binds == [{"destination": "/usr", "type": "bind", "source": "/usr", "options": ["rbind", "ro", "nosuid", "nodev"]}]


def test_unknown_cgroup_version_is_refused() -> None:
    with pytest.raises(ValueError):
        oci.make_config(CFG, 3)


def test_runc_is_told_the_numbers_a_vm_leaf_gets() -> None:
    """One formula: the v1 values runc receives are the ones written into a VM's leaf files."""
    files = v1_files(Limits(0.37, 96 << 20, 77))
    r = oci.make_config(oci.ContainerConfig(**{**CFG.__dict__, "cpu": 0.37, "memory": 96 << 20, "pids_limit": 77}), 1)["linux"]["resources"]
    assert str(r["cpu"]["quota"]) == files["cpu"]["cpu.cfs_quota_us"] and str(r["cpu"]["period"]) == files["cpu"]["cpu.cfs_period_us"]
    assert str(r["cpu"]["shares"]) == files["cpu"]["cpu.shares"]
    assert str(r["memory"]["limit"]) == files["memory"]["memory.limit_in_bytes"] and str(r["memory"]["swap"]) == files["memory"]["memory.memsw.limit_in_bytes"]
    assert str(r["pids"]["limit"]) == files["pids"]["pids.max"]


def test_map_state() -> None:
    assert map_state("running", "running", 0, None) == ("running", None)
    assert map_state("stopped", "running", 1, {"code": 137}) == ("failed", "oom-killed")
    assert map_state("stopped", "running", 0, {"code": 3}) == ("failed", "exited with code 3")
    assert map_state("stopped", "running", 0, {"signal": 9}) == ("failed", "killed by signal 9")
    assert map_state(None, "stopped", 0, None) == ("stopped", None)
    assert map_state(None, "running", 0, None) == ("failed", "container is gone")


def test_sliver_key() -> None:
    assert sliver_key("abc-1.2_x") == "abc-1.2_x"
    k = sliver_key("a/b c")
    assert k.startswith("h") and "/" not in k and k == sliver_key("a/b c")
