"""The sliver seccomp profile: what it must refuse, and how, without root."""

from __future__ import annotations

import pytest

from node_agent.backends.runc import oci, seccomp

#: Issue 8's list, plus what moby's default profile also refuses a process without privileges.
MUST_REFUSE = (
    "mount", "umount2", "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module", "bpf",
    "perf_event_open", "ptrace", "keyctl", "add_key", "request_key", "unshare", "setns", "reboot", "swapon",
    "swapoff", "pivot_root", "open_by_handle_at", "userfaultfd", "io_uring_setup", "fsopen", "open_tree",
    "move_mount", "mount_setattr", "process_vm_readv", "process_vm_writev", "syslog", "acct", "chroot",
)  # fmt: skip
#: What ordinary programs need; none may be refused by mistake.
MUST_ALLOW = ("read", "write", "openat", "execve", "clone", "fork", "socket", "connect", "mmap", "futex", "personality", "prctl", "seccomp", "setuid")


def test_refuses_the_issue_list_with_eperm() -> None:
    prof = seccomp.profile("x86_64")
    assert prof["defaultAction"] == "SCMP_ACT_ALLOW"
    unconditional = [r for r in prof["syscalls"] if "args" not in r]
    refused = {n for r in unconditional if r["errnoRet"] == seccomp.EPERM for n in r["names"]}
    assert set(MUST_REFUSE) <= refused
    assert not refused & set(MUST_ALLOW)
    assert all(r["action"] == "SCMP_ACT_ERRNO" for r in prof["syscalls"])


def test_clone_with_namespace_flags_and_clone3() -> None:
    prof = seccomp.profile("x86_64")
    clone3 = [r for r in prof["syscalls"] if r["names"] == ["clone3"]]
    assert clone3 == [{"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": seccomp.ENOSYS}]
    masks = set()
    for rule in prof["syscalls"]:
        if rule["names"] == ["clone"]:
            (arg,) = rule["args"]
            assert arg["index"] == 0 and arg["op"] == "SCMP_CMP_MASKED_EQ" and arg["value"] == arg["valueTwo"]
            masks.add(arg["value"])
    assert sum(masks) == 0x7E020000  # every CLONE_NEW* flag moby's profile masks, one rule each


def test_crypto_and_vm_sockets_refused() -> None:
    families = {r["args"][0]["value"] for r in seccomp.profile("x86_64")["syscalls"] if r["names"] == ["socket"]}
    assert families == {38, 40}  # AF_ALG, AF_VSOCK


def test_native_abi_only() -> None:
    assert seccomp.profile("x86_64")["architectures"] == ["SCMP_ARCH_X86_64"]
    assert seccomp.profile("aarch64")["architectures"] == ["SCMP_ARCH_AARCH64"]
    with pytest.raises(ValueError, match="riscv64"):
        seccomp.profile("riscv64")


def test_every_sliver_config_carries_it() -> None:
    cfg = oci.ContainerConfig(hostname="h", args=("sh",), cgroups_path="/x", netns_path=None, cpu=1, memory=1 << 26, pids_limit=10)
    assert oci.make_config(cfg, 1)["linux"]["seccomp"] == seccomp.profile()
    assert "sysctl" not in oci.make_config(cfg, 2)["linux"]  # ping_group_range is set by the agent in the netns
