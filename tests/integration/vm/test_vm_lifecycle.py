"""VM lifecycle edges: a command's exit status, an OOM-killed QEMU, refused input, the KVM probe."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from pyroute2 import IPRoute
from vm_helpers import IMAGES, MiB, gone, leftovers, spec, wait_state

from node_agent.backends.base import BackendError
from node_agent.backends.qemu import QemuBackend, accel, assets, hostres, launcher

pytestmark = pytest.mark.timeout(240)


def test_the_commands_exit_status_is_reported_and_the_vm_powers_off(make_backend: Callable[..., QemuBackend]) -> None:
    b = make_backend()
    b.create(spec("bye", command=["sh", "-c", "echo bye; exit 3"], bandwidth=10_000_000))
    pid = b.pid("bye")
    assert pid is not None
    with IPRoute() as ipr:  # what the guest receives is shaped on its TAP
        idx = ipr.link_lookup(ifname=b._metas["bye"]["tap"])[0]
        kinds = {q.get_attr("TCA_KIND") for q in ipr.get_qdiscs(index=idx)}
    assert "tbf" in kinds
    st = wait_state(b, "bye", "failed")
    assert st.reason == "exited with code 3"
    assert b"bye\n" in b.logs("bye", 0, 1 << 20)[0]
    with pytest.raises(BackendError, match="not running"):
        list(b.exec("bye", ["true"], 5))
    b.destroy("bye")
    assert leftovers(b, "bye", [pid]) == []


def test_a_qemu_killed_for_memory_shows_failed_with_the_reason(make_backend: Callable[..., QemuBackend]) -> None:
    # no room above guest RAM: QEMU's own memory goes over the cgroup limit while it boots
    b = make_backend(memory_overhead=4 * MiB)
    b.create(spec("oom"))
    st = wait_state(b, "oom", "failed")
    assert st.reason is not None and st.reason.startswith("oom-killed")
    b.stop("oom")  # the cgroup goes, the reason was kept
    assert b.status("oom").state == "stopped"
    assert b._metas["oom"]["oom_kills"] >= 1


def test_a_guest_that_does_not_boot_in_time_is_booted_once_more_then_failed(make_backend: Callable[..., QemuBackend]) -> None:
    b = make_backend(boot_timeout=0.5)  # no guest starts its command that fast: every boot "hangs"
    b.create(spec("slow"))
    first = b.pid("slow")
    assert first is not None
    st = wait_state(b, "slow", "failed", timeout=30)  # each status() call is the watchdog's turn
    assert st.reason == "the guest did not start its command within 0.5 s (2 boots)"
    assert b._metas["slow"]["boot_attempts"] == 2
    assert gone(first) and b.pid("slow") is None


def test_refused_input_leaves_nothing_behind(make_backend: Callable[..., QemuBackend]) -> None:
    b = make_backend()
    with pytest.raises(BackendError, match="at least 96 MiB"):
        b.create(spec("small", memory=64 * MiB))
    with pytest.raises(BackendError, match="unknown image"):
        b.create(spec("img", image="ubuntu"))
    with pytest.raises(BackendError, match="does not offer"):
        b.create(spec("ctr", isolation="container"))
    with pytest.raises(BackendError, match="NUL"):
        b.create(spec("nul", command=["echo", "a\0b"]))
    for sid in ("small", "img", "ctr", "nul"):
        assert leftovers(b, sid, []) == [] and b.status(sid).state == "lost"
    assert list(b.slivers_dir.iterdir()) == []


def test_a_vm_that_cannot_have_its_tap_is_refused_and_leaves_nothing(make_backend: Callable[..., QemuBackend]) -> None:
    b = make_backend()
    b.net.remove_bridge()
    try:
        with pytest.raises(BackendError, match=r"VM network: .*bridge .* is missing"):
            b.create(spec("nonet"))
        assert leftovers(b, "nonet", []) == [] and b.status("nonet").state == "lost"
        assert not (Path("/sys/class/net") / hostres.tap_name(b.prefix, b.node, "nonet")).exists()
    finally:
        b.net.ensure_bridge()


def test_accelerator_probe_boots_a_guest_and_remembers_the_answer(tmp_path: Path) -> None:
    a = assets.ensure(IMAGES)
    # the probe's own mechanism, with the accelerator that works everywhere
    assert accel.boots_with("tcg", a, tmp_path / "p", 120.0, tsc_khz=accel.host_tsc_khz()) is None
    assert list((tmp_path / "p").iterdir()) == []
    forced = accel.choose(tmp_path, a, "tcg")
    assert forced.name == "tcg" and "forced" in forced.reason
    # auto: whatever this host's KVM does within a short deadline, the answer is kept
    first = accel.choose(tmp_path, a, "auto", deadline=5.0)
    assert first.name in ("kvm", "tcg") and first.reason
    started = time.monotonic()
    again = accel.choose(tmp_path, a, "auto", deadline=5.0)
    assert (again.name, again.reason) == (first.name, first.reason) and time.monotonic() - started < 2.0
    with pytest.raises(ValueError):
        accel.choose(tmp_path, a, "hvf")
    assert launcher.QEMU in accel.qemu_version() or accel.qemu_version().startswith("QEMU")


def test_the_agent_builds_a_qemu_backend_for_vm_isolation(vm_root: Path) -> None:
    from vm_helpers import PREFIX

    from node_agent.build import make_backends
    from slices.errors import SpecError
    from slices.model import Capacity

    cap = Capacity(cpu=2.0, memory=4 << 30, disk=10 << 30)
    made = make_backends({"vm": "qemu"}, vm_root / "built", "n1", cap, {"prefix": PREFIX, "images_dir": IMAGES, "pids_limit": 64}, {"accel": "tcg"})
    try:
        assert isinstance(made["vm"], QemuBackend) and made["vm"].accel.name == "tcg"
    finally:
        made["vm"].close()
    with pytest.raises(SpecError, match="qemu serves vm isolation only"):
        make_backends({"container": "qemu"}, vm_root / "built", "n1", cap)
