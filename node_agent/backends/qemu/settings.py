"""The QEMU backend's section of the agent settings (``qemu:`` in agent.yaml)."""

from __future__ import annotations

from dataclasses import dataclass

from slices.settings import setting


@dataclass(frozen=True)
class QemuSettings:
    accelerator: str = setting("auto", "auto (KVM if a probe guest boots with it within probe_deadline, else TCG), kvm or tcg")
    memory_overhead_mib: int = setting(96, "MiB QEMU may use above a VM's RAM (itself, TCG's translation cache, device buffers); the controller charges it per VM")
    pids_limit: int = setting(128, "processes and threads per VM sliver (QEMU's vCPU and I/O threads, its console logger)")
    boot_timeout: float = setting(90.0, "seconds a guest may take to start its command before it is booted once more, then failed")
    start_timeout: float = setting(30.0, "seconds QEMU may take to set a VM up (before the guest boots)")
    stop_timeout: float = setting(10.0, "seconds a guest gets to power off after the ACPI power button before QEMU is told to quit")
    probe_deadline: float = setting(8.0, "seconds the KVM probe guest gets to reach userspace (the answer is kept per host)")
    log_max_bytes: int = setting(1024 * 1024, "per-VM console log size before rotation (one old file kept)")
    incoming_timeout: float = setting(900.0, "seconds a VM waiting for a live migration may wait for it to arrive and finish before it is failed (and the move abandoned)")
