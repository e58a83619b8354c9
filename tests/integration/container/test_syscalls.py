"""From inside a real sliver: each forbidden system call fails with EPERM, and nothing else is held.

The probe runs in a ``host``-image sliver (the host's python3) and calls syscall numbers
directly through ctypes. Arguments are chosen so that each call would be harmless, and for
several would *succeed*, were it let through (``keyctl`` reading the session keyring,
``unshare(CLONE_NEWUSER)``, ``userfaultfd(UFFD_USER_MODE_ONLY)``, ``ptrace(PTRACE_TRACEME)``,
``setns(-1)`` which would be EBADF): EPERM there can only come from the seccomp filter.
"""

from __future__ import annotations

import json
import platform
import signal

import pytest
from ctr_helpers import py_in, run_in, spec

from node_agent.backends.runc.backend import RuncBackend

pytestmark = pytest.mark.timeout(90)

# x86_64 numbers; the arguments would be harmless if a call got through.
PROBE = r"""
import ctypes, errno, json, mmap, os, socket
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

def call(nr, *args):
    ctypes.set_errno(0)
    r = libc.syscall(nr, *[ctypes.c_long(a) for a in args])
    return "ok" if r >= 0 else errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))

CLONE_NEWUSER, SIGCHLD = 0x10000000, 17
calls = {
    "mount": (165, 0, 0, 0, 0, 0), "umount2": (166, 0, 0), "pivot_root": (155, 0, 0),
    "swapon": (167, 0, 0), "swapoff": (168, 0), "reboot": (169, 0, 0, 0, 0),
    "kexec_load": (246, 0, 0, 0, 0), "kexec_file_load": (320, -1, -1, 0, 0, 0),
    "init_module": (175, 0, 0, 0), "finit_module": (313, -1, 0, 0), "delete_module": (176, 0, 0),
    "bpf": (321, 0, 0, 0), "perf_event_open": (298, 0, 0, -1, -1, 0),
    "keyctl": (250, 0, -3, 0), "add_key": (248, 0, 0, 0, 0, 0), "request_key": (249, 0, 0, 0, 0),
    "setns": (308, -1, 0), "open_by_handle_at": (304, -1, 0, 0), "userfaultfd": (323, 1),
    "io_uring_setup": (425, 1, 0), "clone3": (435, 0, 0),
}
out = {name: call(*args) for name, args in calls.items()}
child = os.fork()  # PTRACE_TRACEME in a child that exits at once: if allowed, nothing is left traced
if child == 0:
    os._exit(0 if libc.syscall(101, 0, 0, 0, 0) == 0 else ctypes.get_errno())
_, status = os.waitpid(child, 0)
out["ptrace"] = errno.errorcode.get(os.WEXITSTATUS(status), "ok")
pid = libc.syscall(56, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0)  # clone into a new user namespace
if pid == 0:
    os._exit(0)
out["clone(CLONE_NEWUSER)"] = "ok" if pid > 0 else errno.errorcode[ctypes.get_errno()]
if pid > 0:
    os.waitpid(pid, 0)
for family, name in ((38, "socket(AF_ALG)"), (40, "socket(AF_VSOCK)")):
    try:
        socket.socket(family, socket.SOCK_SEQPACKET if family == 38 else socket.SOCK_STREAM).close()
        out[name] = "ok"
    except OSError as exc:
        out[name] = errno.errorcode.get(exc.errno, str(exc.errno))
out["unshare(CLONE_NEWUSER)"] = call(272, CLONE_NEWUSER)  # last: were it allowed, it would move us

# The 32-bit ABI (int 0x80: getpid) is not in the filter: the caller is killed, not let through.
child = os.fork()
if child == 0:
    code = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    code.write(bytes([0xB8, 0x14, 0, 0, 0, 0xCD, 0x80, 0xC3]))
    ctypes.CFUNCTYPE(ctypes.c_int)(ctypes.addressof(ctypes.c_char.from_buffer(code)))()
    os._exit(0)
_, status = os.waitpid(child, 0)
out["int 0x80"] = f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status) else f"exit {os.WEXITSTATUS(status)}"
# What must keep working: a plain fork and thread, sockets, ICMP echo sockets.
out["fork"] = "ok" if os.fork() or os._exit(0) else "?"
socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP).close()
status = dict(line.split(":\t") for line in open("/proc/self/status").read().splitlines() if ":\t" in line)
out["status"] = {k: status[k].strip() for k in ("Seccomp", "NoNewPrivs", "CapEff", "CapBnd", "CapPrm")}
print(json.dumps(out))
"""

FORBIDDEN = (
    "mount", "umount2", "pivot_root", "swapon", "swapoff", "reboot", "kexec_load", "kexec_file_load",
    "init_module", "finit_module", "delete_module", "bpf", "perf_event_open", "keyctl", "add_key",
    "request_key", "setns", "open_by_handle_at", "userfaultfd", "io_uring_setup", "ptrace",
    "clone(CLONE_NEWUSER)", "unshare(CLONE_NEWUSER)", "socket(AF_ALG)", "socket(AF_VSOCK)",
)  # fmt: skip
#: CAP_AUDIT_WRITE, CAP_KILL, CAP_NET_BIND_SERVICE: runc's default set, nothing more.
DEFAULT_CAPS = f"{(1 << 29) | (1 << 5) | (1 << 10):016x}"


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the probe calls x86_64 syscall numbers")
def test_forbidden_syscalls_get_eperm(backend: RuncBackend) -> None:
    backend.create(spec("sys", image="host"))
    code, out, err = py_in(backend, "sys", PROBE)
    assert code == 0, err
    got = json.loads(out)
    assert {name: got[name] for name in FORBIDDEN} == dict.fromkeys(FORBIDDEN, "EPERM")
    assert got["clone3"] == "ENOSYS"  # so the C library falls back to clone, which is filtered
    assert got["int 0x80"] == f"signal {int(signal.SIGSYS)}"
    assert got["fork"] == "ok"
    assert got["status"] == {"Seccomp": "2", "NoNewPrivs": "1", "CapEff": DEFAULT_CAPS, "CapBnd": DEFAULT_CAPS, "CapPrm": DEFAULT_CAPS}


def test_only_the_oci_default_devices(backend: RuncBackend) -> None:
    backend.create(spec("dev"))
    code, out, _ = run_in(backend, "dev", "ls -l /dev /dev/pts | grep '^[cb]' | awk '{print $1, $NF}'")
    assert code == 0
    devices = sorted(line.split()[1] for line in out.splitlines())
    assert devices == ["full", "null", "ptmx", "random", "tty", "urandom", "zero"], out
    assert not [line for line in out.splitlines() if line.startswith("b")]  # no block device at all
    code, _, err = run_in(backend, "dev", "mknod /tmp/sda b 8 0")
    assert code != 0 and "not permitted" in err


def test_masked_kernel_paths_read_as_nothing(backend: RuncBackend) -> None:
    backend.create(spec("mask"))
    code, out, _ = run_in(backend, "mask", "for f in /proc/kcore /proc/keys /proc/timer_list /proc/interrupts; do echo $f $(cat $f | wc -c); done; ls /sys/firmware | wc -l")
    assert code == 0
    *files, firmware = out.splitlines()
    assert [line.split()[1] for line in files] == ["0", "0", "0", "0"], out
    assert firmware == "0"
