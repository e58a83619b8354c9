"""The seccomp profile of container slivers (``linux.seccomp`` in config.json); pure data.

Where it comes from: Docker's default profile (moby/profiles ``seccomp/default.json``,
v0.2.3, 2026), read for a process holding only runc's default capabilities, which is what a
sliver holds. Every syscall that profile refuses such a process is refused here, with EPERM,
plus three it allows: ``ptrace``, ``process_vm_readv`` and ``process_vm_writev`` (issue 8
refuses tracing; the latter two read and write another process's memory just as well).

Why a deny list under a default of *allow* rather than moby's allow list under a default of
EPERM: runc builds the filter with libseccomp on every container start, and the cost grows
with the number of rules. Measured here as CPU time of ``runc run -d`` plus the container's
init (p50 of 30): 28.2 ms without a filter, +5.7 ms with moby's ~360-name allow list, +1.0 ms
with this list of ~80 rules (libseccomp alone: 3.1 ms vs 0.34 ms). For every syscall the
installed libseccomp knows, the two policies refuse the same set. The price: a syscall newer than this
list (and unknown to it) is allowed, where moby's would get ENOSYS. Capabilities still stand
in front of it (a sliver holds three) and the sliver runs in its own user namespace, so a
new syscall that needs privilege is refused by the kernel anyway; review this list when the
kernel or libseccomp is upgraded (``tests/unit/test_seccomp.py`` pins what it must contain).

Namespaces: ``unshare`` and ``setns`` are refused outright, and ``clone`` with any
namespace flag; ``clone3`` gets ENOSYS (its flags are in memory, out of seccomp's reach), so
the C library falls back to ``clone``, as with moby's profile. Sockets of the kernel crypto
API (AF_ALG) and VM sockets (AF_VSOCK) are refused as in moby's profile: no use in a sliver,
a long record of kernel bugs.

Only the native system-call ABI is listed (x86_64 or aarch64): runc leaves libseccomp's
bad-architecture action at "kill", so a 32-bit system call from inside a sliver kills the
caller instead of slipping past a filter written for 64-bit numbers.
"""

from __future__ import annotations

import platform
from typing import Any

EPERM, ENOSYS = 1, 38
AF_ALG, AF_VSOCK = 38, 40

#: CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET
CLONE_NAMESPACE_FLAGS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000)

#: Refused with EPERM, grouped by what they would let a sliver do.
DENIED: dict[str, tuple[str, ...]] = {
    "change the mount tree, swap or quotas": (
        "mount", "umount", "umount2", "pivot_root", "chroot", "open_tree", "open_tree_attr", "move_mount",
        "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr", "swapon", "swapoff", "quotactl", "quotactl_fd",
    ),
    "enter or make namespaces": ("unshare", "setns"),
    "load kernel code or restart the machine": (
        "init_module", "finit_module", "delete_module", "create_module", "query_module", "get_kernel_syms",
        "kexec_load", "kexec_file_load", "reboot",
    ),
    "trace or reach into other processes": (
        "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd", "process_madvise",
    ),
    "kernel attack surface with no use in a sliver": (
        "bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register",
        "lookup_dcookie", "fanotify_init", "open_by_handle_at",
        "lsm_get_self_attr", "lsm_set_self_attr", "lsm_list_modules",
    ),
    "the kernel keyring (not namespaced)": ("add_key", "request_key", "keyctl"),
    "the host's clock, hardware and logs": (
        "settimeofday", "clock_settime", "stime", "iopl", "ioperm", "syslog", "vhangup", "acct",
        "sethostname", "setdomainname",
    ),
    "NUMA placement (host memory policy)": (
        "mbind", "set_mempolicy", "get_mempolicy", "migrate_pages", "move_pages", "set_mempolicy_home_node",
    ),
    "obsolete or never implemented": (
        "uselib", "ustat", "sysfs", "_sysctl", "nfsservctl", "getpmsg", "putpmsg", "afs_syscall", "tuxcall", "security", "vserver",
    ),
}  # fmt: skip

_NATIVE_ARCH = {"x86_64": "SCMP_ARCH_X86_64", "amd64": "SCMP_ARCH_X86_64", "aarch64": "SCMP_ARCH_AARCH64", "arm64": "SCMP_ARCH_AARCH64"}


def denied_names() -> list[str]:
    return sorted({name for names in DENIED.values() for name in names})


def native_arch(machine: str | None = None) -> str:
    machine = (machine or platform.machine()).lower()
    try:
        return _NATIVE_ARCH[machine]
    except KeyError:
        raise ValueError(f"no seccomp profile for machine type {machine!r} (x86_64 and aarch64 have one)") from None


def _errno(names: list[str], errno: int, args: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    rule: dict[str, Any] = {"names": names, "action": "SCMP_ACT_ERRNO", "errnoRet": errno}
    if args:
        rule["args"] = args
    return rule


def profile(machine: str | None = None) -> dict[str, Any]:
    """The ``linux.seccomp`` object: default allow, the refusals above, then the argument rules."""
    rules = [_errno(denied_names(), EPERM), _errno(["clone3"], ENOSYS)]
    # One rule per flag: a rule's conditions are ANDed, so "any namespace flag" takes seven.
    rules += [_errno(["clone"], EPERM, [{"index": 0, "value": f, "valueTwo": f, "op": "SCMP_CMP_MASKED_EQ"}]) for f in CLONE_NAMESPACE_FLAGS]
    rules += [_errno(["socket"], EPERM, [{"index": 0, "value": family, "op": "SCMP_CMP_EQ"}]) for family in (AF_ALG, AF_VSOCK)]
    return {"defaultAction": "SCMP_ACT_ALLOW", "architectures": [native_arch(machine)], "syscalls": rules}
