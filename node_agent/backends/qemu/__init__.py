"""The ``vm`` isolation backend (QEMU microvm guests) and everything only it uses: the backend
(backend.py), its settings section (settings.py), the guest kernel, initramfs and agent, QEMU's
command line, QMP and the exec protocol. Kept import-free, so reading the settings schema does
not load the backend; the guest side lives in guest/."""
