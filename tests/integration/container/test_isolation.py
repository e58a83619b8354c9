"""Slivers see their own processes, hostname and files only, and cannot write outside their layer."""

from __future__ import annotations

import pytest
from ctr_helpers import run_in, spec

from node_agent.backends.runc.backend import RuncBackend

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
