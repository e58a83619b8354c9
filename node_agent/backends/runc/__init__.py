"""The ``container`` isolation backend (runc) and everything only it uses: the backend itself
(backend.py), its settings section (settings.py), the OCI config, the container rootfs, the
per-sliver supervisor and its log. Kept import-free, so reading the settings schema does not
load netlink and the rest of the backend."""
