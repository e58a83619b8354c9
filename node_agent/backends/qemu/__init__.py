"""VM slivers: QEMU microvm guests (backend.py); the guest side lives in guest/."""

from node_agent.backends.qemu.backend import QemuBackend

__all__ = ["QemuBackend"]
