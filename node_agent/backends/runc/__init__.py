"""The ``container`` isolation backend (runc) and everything only it uses: the OCI config,
the container rootfs, the per-sliver supervisor and its log."""

from node_agent.backends.runc.backend import RuncBackend

__all__ = ["RuncBackend"]
