"""Slivers see their own processes, hostname and files only, and cannot write outside their layer,
raise their own limits, or fill anything but their own disk; their root is nobody on the host."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from ctr_helpers import MiB, run_in, spec
from test_resources import cgroup_file

from node_agent import cgroups
from node_agent.backends.runc import rootfs
from node_agent.backends.runc.backend import RuncBackend
from tests.conftest import wait_for

pytestmark = pytest.mark.timeout(60)


def test_processes_hostname_and_files_are_private(backend: RuncBackend) -> None:
    backend.create(spec("a", slice="alpha", command=("sh", "-c", "sleep 777 & wait")))
    backend.create(spec("b", slice="beta"))
    code, out, _ = run_in(backend, "a", "hostname; echo secret > /mine; ps -o pid,args")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "alpha"
    assert "sleep 777" in out and "pytest" not in out
    assert len(lines) < 10  # its own few processes, not the host's
    code, out, _ = run_in(backend, "b", "hostname; ps -o args; cat /mine")
    assert code != 0
    assert out.splitlines()[0] == "beta"
    assert "sleep 777" not in out
    code, out, _ = run_in(backend, "a", "cat /mine")
    assert (code, out) == (0, "secret\n")


def test_the_slivers_secrets_are_on_the_host_for_root_only(backend: RuncBackend) -> None:
    backend.create(spec("env", env={"TOKEN": "hush"}))
    code, out, _ = run_in(backend, "env", "echo $TOKEN")
    assert (code, out) == (0, "hush\n")
    sdir = backend.dirs.dir("env")
    files = [sdir / "bundle" / "config.json", sdir / "meta.json"]
    assert all("hush" in p.read_text() for p in files), "the check below must look at the files that hold it"
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in files} == {"config.json": 0o600, "meta.json": 0o600}


def test_writes_outside_the_layer_fail(backend: RuncBackend) -> None:
    backend.create(spec("ro", image="host"))
    for path in ("/usr/evil", "/proc/sys/kernel/hostname", "/sys/evil"):
        code, _, err = run_in(backend, "ro", f"echo x > {path}")
        assert code != 0, path
        assert "Read-only" in err or "read-only" in err.lower(), (path, err)
    code, out, _ = run_in(backend, "ro", "python3 -c 'print(6 * 7)'")
    assert (code, out) == (0, "42\n")


def test_disk_fills_with_enospc_inside_the_sliver_only(backend: RuncBackend) -> None:
    backend.create(spec("full", disk=32 << 20))
    code, _, err = run_in(backend, "full", "dd if=/dev/zero of=/fill bs=1M count=64")
    assert code != 0
    assert "No space left on device" in err
    code, _, _ = run_in(backend, "full", "rm /fill && echo ok > /after")
    assert code == 0  # freeing space makes the disk usable again


def test_cgroup_limits_cannot_be_raised_from_inside(backend: RuncBackend) -> None:
    backend.create(spec("cg", memory=64 * MiB))
    if cgroups.version() == 2:
        files = ("memory.max", "pids.max", "cpu.max")
    else:
        files = ("memory/memory.limit_in_bytes", "pids/pids.max", "cpu,cpuacct/cpu.cfs_quota_us", "cpu/cpu.cfs_quota_us")
    script = "; ".join(f"[ -e /sys/fs/cgroup/{f} ] && {{ echo -1 > /sys/fs/cgroup/{f} && echo WROTE {f}; }}" for f in files)
    _, out, err = run_in(backend, "cg", script + "; mount -o remount,rw /sys/fs/cgroup || echo REMOUNT-REFUSED; true")
    assert "WROTE" not in out, out
    assert "Read-only file system" in err and "REMOUNT-REFUSED" in out
    assert cgroup_file(backend, "cg", "memory", "memory.max" if cgroups.version() == 2 else "memory.limit_in_bytes").read_text().strip() == str(64 * MiB)


def test_proc_shows_only_the_slivers_own_processes(backend: RuncBackend) -> None:
    backend.create(spec("p1", command=("sh", "-c", "sleep 888 & wait")))
    code, out, _ = run_in(backend, "p1", "ls /proc | grep -c '^[0-9]'; cat /proc/1/cmdline | tr '\\0' ' '; echo; ls /proc/1/root/ >/dev/null && echo ROOT-OK")
    assert code == 0
    count, cmdline, root = out.splitlines()
    assert int(count) <= 5  # init, its sleep, this exec's shell and its pipeline
    assert cmdline.startswith("sh -c sleep 888")  # pid 1 is the sliver's own init, not the host's
    assert root == "ROOT-OK"
    host_pid = os.getpid()
    code, out, _ = run_in(backend, "p1", "cd /proc && for p in [0-9]*; do echo $p $(cat $p/comm); done")
    procs = dict(line.split(" ", 1) for line in out.splitlines())
    assert code == 0 and str(host_pid) not in procs and set(procs.values()) <= {"sh", "sleep", "cat"}, out


def test_another_slivers_files_are_unreachable_by_any_path(backend: RuncBackend) -> None:
    backend.create(spec("mine"))
    backend.create(spec("theirs"))
    token = f"secret-{os.getpid()}"
    assert run_in(backend, "theirs", f"echo {token} > /{token}")[0] == 0
    theirs = backend._metas["theirs"]
    _, out, _ = run_in(backend, "mine", "find / /proc/[0-9]*/root/ -xdev -name 'secret-*' 2>/dev/null; cat /proc/self/mountinfo")
    assert token not in out, out
    assert "theirs" not in out and theirs.get("rootfs", "/nonexistent") not in out
    assert "rootfs" in theirs  # user namespaces are on by default
    assert stat.S_IMODE(os.stat(rootfs.ROOTS_DIR).st_mode) == 0o711  # on the host: not listable, named with 128 random bits


def test_root_inside_is_an_unprivileged_range_outside(backend: RuncBackend) -> None:
    assert backend.machine.uid_block is not None, "user namespaces are on by default"
    backend.create(spec("u1", command=("sh", "-c", "echo made > /made; sleep 1000")))
    backend.create(spec("u2"))
    ids = {sid: backend._metas[sid]["host_id"] for sid in ("u1", "u2")}
    assert abs(ids["u1"] - ids["u2"]) >= 1 << 16  # disjoint ranges
    code, out, _ = run_in(backend, "u1", "id -u; cat /proc/self/uid_map /proc/self/gid_map")
    assert code == 0 and out.split() == ["0", "0", str(ids["u1"]), "65536", "0", str(ids["u1"]), "65536"]
    init = backend.pid("u1")
    assert init is not None
    uids = next(line for line in Path(f"/proc/{init}/status").read_text().splitlines() if line.startswith("Uid:"))
    assert uids.split()[1:] == [str(ids["u1"])] * 4  # the host sees an unprivileged uid
    made = backend.slivers_dir / "u1" / "disk" / "upper" / "made"
    wait_for(made.exists, what="the sliver's file")
    assert (made.stat().st_uid, made.stat().st_gid) == (ids["u1"], ids["u1"])
    assert run_in(backend, "u1", "echo x > /etc/hostname && ls -ln /etc/hostname")[1].split()[2] == "0"  # copy-up works


def test_shared_memory_is_bounded(backend: RuncBackend) -> None:
    backend.create(spec("shm", memory=192 * MiB))
    code, _, err = run_in(backend, "shm", "dd if=/dev/zero of=/dev/shm/fill bs=1M count=80")
    assert code != 0 and "No space left on device" in err  # 64 MiB tmpfs, counted in its memory limit


def test_without_user_namespaces_root_is_root_but_still_filtered(make_backend) -> None:  # type: ignore[no-untyped-def]
    """``sliver_userns: false`` (a host that forbids user namespaces): the sliver's root is the
    host's, its rootfs stays in its bundle, and the seccomp filter and capabilities still hold."""
    backend: RuncBackend = make_backend(machine={"uid_block": None})
    backend.create(spec("plain"))
    assert "host_id" not in backend._metas["plain"] and "rootfs" not in backend._metas["plain"]
    code, out, err = run_in(backend, "plain", "cat /proc/self/uid_map; grep Seccomp: /proc/self/status; unshare -U true || echo REFUSED")
    assert code == 0
    assert out.split()[:3] == ["0", "0", "4294967295"] and "Seccomp:\t2" in out and "REFUSED" in out, out
    assert "not permitted" in err, err  # the filter's EPERM, not a missing applet
    init = backend.pid("plain")
    assert init is not None and Path(f"/proc/{init}/status").read_text().split("Uid:")[1].split()[0] == "0"


def test_an_attached_id_mapped_view_serves_kernels_before_6_15(backend: RuncBackend) -> None:
    """Older kernels take no detached mount as an overlay layer: the view is attached beside
    the disk while the overlay is made, and gone after."""
    backend.disks.detached_layers = False
    backend.create(spec("old", command=("sh", "-c", "echo made > /made; sleep 1000")))
    host_id = backend._metas["old"]["host_id"]
    assert run_in(backend, "old", "id -u; stat -c %u /bin/busybox")[1].split() == ["0", "0"]
    made = backend.slivers_dir / "old" / "disk" / "upper" / "made"
    wait_for(made.exists, what="the sliver's file")
    assert made.stat().st_uid == host_id
    assert not (backend.slivers_dir / "old" / "lower").exists()
