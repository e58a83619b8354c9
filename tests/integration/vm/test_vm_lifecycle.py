"""VM lifecycle edges: a command's exit status (failed, or exited as a container's would), a
hung boot, refused input, the KVM probe, the agent's build of a node with both kinds. (An
OOM-killed QEMU: test_vm_shared.py, beside a running neighbour.)"""

from __future__ import annotations

import stat
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from pyroute2 import IPRoute
from vm_helpers import IMAGES, MiB, gone, leftovers, run_in, spec, wait_state

from node_agent.backends.base import BackendError
from node_agent.backends.qemu import accel, assets, launcher
from node_agent.backends.qemu.backend import QemuBackend
from node_agent.netdev import tap_name
from slices.waiting import wait_until

pytestmark = pytest.mark.timeout(240)


def test_the_commands_exit_status_is_reported_and_the_vm_powers_off(make_backend: Callable[..., QemuBackend]) -> None:
    b = make_backend()
    b.create(spec("bye", command=["sh", "-c", "echo bye; exit 3"], bandwidth=10_000_000))
    pid = b.pid("bye")
    assert pid is not None
    sdir = b.dirs.dir("bye")  # both hold the slice's environment (its secrets): root's only
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in (sdir / "initrd", sdir / "meta.json")} == {"initrd": 0o600, "meta.json": 0o600}
    with IPRoute() as ipr:  # shaped both ways: on the TAP (what the guest receives) and its IFB
        idx = ipr.link_lookup(ifname=b._metas["bye"]["tap"])[0]
        kinds = {q.get_attr("TCA_KIND") for q in ipr.get_qdiscs(index=idx)}
    assert {"tbf", "ingress"} <= kinds
    st = wait_state(b, "bye", "failed")
    assert st.reason == "exited with code 3"
    assert b"bye\n" in b.logs("bye", 0, 1 << 20)[0]
    with pytest.raises(BackendError, match="not running"):
        list(b.exec("bye", ["true"], 5))
    b.destroy("bye")
    assert leftovers(b, "bye", [pid]) == []


def test_a_clean_exit_and_a_poweroff_inside_the_guest_are_exited_as_for_a_container(make_backend: Callable[..., QemuBackend]) -> None:
    """``exited``, not ``failed``: the restart policy (``on-failure``) leaves both alone."""
    b = make_backend()
    b.create(spec("clean", command=["sh", "-c", "echo done; exit 0"]))
    b.create(spec("off"))  # the default command: runs until asked to stop
    assert wait_state(b, "clean", "exited").reason == "exited with code 0"
    wait_state(b, "off", "running")
    pid = b.pid("off")
    assert pid is not None
    # busybox asks PID 1, the guest agent, to power off while this exec still runs: the exec
    # is told how the power-off ended it (SIGTERM), with its output, not left to a dropped link
    assert run_in(b, "off", "echo before; poweroff; sleep 60") == (143, "before\n", "")
    st = wait_state(b, "off", "exited")
    assert st.reason is not None and "powered off" in st.reason
    assert wait_until(lambda: gone(pid), 30, "QEMU gone after the power-off")
    for sid in ("clean", "off"):
        b.destroy(sid)
        assert leftovers(b, sid, []) == []


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
    assert b.machine.addresses.allocated() == {}


def test_a_vm_that_cannot_have_its_tap_is_refused_and_leaves_nothing(make_backend: Callable[..., QemuBackend]) -> None:
    b = make_backend()
    b.net.remove_bridge()
    try:
        with pytest.raises(BackendError, match=r"VM network: .*bridge .* is missing"):
            b.create(spec("nonet"))
        assert leftovers(b, "nonet", []) == [] and b.status("nonet").state == "lost"
        assert not (Path("/sys/class/net") / tap_name(b.machine.prefix, b.machine.node, "nonet")).exists()
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
    assert (tmp_path / "accel.json").exists()
    assert first.name in ("kvm", "tcg") and first.reason
    started = time.monotonic()
    again = accel.choose(tmp_path, a, "auto", deadline=5.0)
    assert (again.name, again.reason) == (first.name, first.reason) and time.monotonic() - started < 2.0
    with pytest.raises(ValueError):
        accel.choose(tmp_path, a, "hvf")
    assert launcher.QEMU in accel.qemu_version() or accel.qemu_version().startswith("QEMU")


def test_the_agent_builds_a_qemu_backend_for_vm_isolation(vm_root: Path) -> None:
    from vm_helpers import make_machine

    from node_agent.backends.qemu.settings import QemuSettings
    from node_agent.build import backend_facts, make_backends

    class Sections:
        qemu = QemuSettings(accelerator="tcg", memory_overhead_mib=100)

    machine = make_machine(vm_root / "built")
    made = make_backends({"vm": "qemu", "container": "runc"}, "n1", vm_root / "built", machine, Sections())
    try:
        vm = made["vm"]
        assert isinstance(vm, QemuBackend) and vm.accel.name == "tcg" and made["container"].name == "runc"
        assert vm.machine is made["container"].machine  # type: ignore[attr-defined]
        facts = backend_facts(made)
        assert facts["overhead.vm.memory"] == str(100 * MiB)
        assert facts["vm.accelerator"] == "tcg (forced by the qemu.accelerator setting)"
        assert int(facts["vm.min_memory"]) == vm.assets.min_memory == 96 * MiB
    finally:
        for b in made.values():
            b.close()
        machine.forget()
