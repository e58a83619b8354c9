"""Pure parts of the VM backend: kernel metadata, initramfs archives, the guest agent framing."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from node_agent.backends.qemu import initramfs, kernel
from node_agent.backends.qemu import protocol as p

pytestmark = pytest.mark.timeout(30)

APT_DEPENDS = """linux-image-cloud-amd64
  Depends: linux-image-6.1.0-56-cloud-amd64
"""


def elf_with_modinfo(info: bytes) -> bytes:
    """A minimal ELF64 with sections: null, .shstrtab, .modinfo."""
    shstr = b"\0.shstrtab\0.modinfo\0"
    data_off = 64
    shstr_off, info_off = data_off, data_off + len(shstr)
    shoff = info_off + len(info)
    header = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
    header += struct.pack("<HHIQQQIHHHHHH", 1, 62, 1, 0, 0, shoff, 0, 64, 0, 0, 64, 3, 1)
    sections = bytes(64)
    sections += struct.pack("<IIQQQQIIQQ", 1, 3, 0, 0, shstr_off, len(shstr), 0, 0, 1, 0)
    sections += struct.pack("<IIQQQQIIQQ", 11, 1, 0, 0, info_off, len(info), 0, 0, 1, 0)
    return header + shstr + info + sections


def test_package_from_apt_cache_depends() -> None:
    assert kernel.package_from_depends(APT_DEPENDS) == "linux-image-6.1.0-56-cloud-amd64"
    with pytest.raises(kernel.KernelError):
        kernel.package_from_depends("linux-image-cloud-amd64\n  Recommends: foo\n")


def test_modinfo_reads_depends_from_an_elf_section() -> None:
    data = elf_with_modinfo(b"license=GPL\0depends=virtio,virtio_ring\0name=virtio_mmio\0")
    info = kernel.modinfo(data)
    assert info["depends"] == "virtio,virtio_ring" and info["name"] == "virtio_mmio"
    with pytest.raises(kernel.KernelError):
        kernel.modinfo(b"not an elf file at all")


def test_load_order_puts_dependencies_first_and_skips_builtins() -> None:
    deps = {
        "virtio_ring": [],
        "virtio": ["virtio_ring"],
        "virtio_mmio": ["virtio", "virtio_ring"],
        "virtio_net": ["virtio", "net_failover"],
        "net_failover": ["failover"],
        "failover": [],
    }
    order = kernel.load_order(("virtio_mmio", "virtio-net", "ext4"), deps, builtin={"ext4"})
    assert order == ["virtio_ring", "virtio", "virtio_mmio", "failover", "net_failover", "virtio_net"]
    with pytest.raises(kernel.KernelError, match="neither built in"):
        kernel.load_order(("nosuch",), deps, builtin=set())
    with pytest.raises(kernel.KernelError, match="cycle"):
        kernel.load_order(("a",), {"a": ["b"], "b": ["a"]}, builtin=set())


def test_min_guest_memory_from_the_bzimage_header() -> None:
    header = bytearray(1024)
    header[0x202:0x206] = b"HdrS"
    struct.pack_into("<Q", header, 0x258, 16 << 20)
    struct.pack_into("<I", header, 0x260, 0x337A000)  # Debian 6.1 cloud: init_size 51.5 MiB
    assert kernel.min_guest_memory(bytes(header)) == 96 << 20
    with pytest.raises(kernel.KernelError):
        kernel.min_guest_memory(bytes(1024))


@pytest.mark.skipif(shutil.which("cpio") is None, reason="cpio is not installed (Debian package cpio)")
def test_cpio_archive_unpacks_with_the_cpio_tool(tmp_path: Path) -> None:
    entries = [
        initramfs.directory("/d"),
        initramfs.file("/d/f", b"hello\n", 0o640),
        initramfs.symlink("/d/l", "f"),
        initramfs.file("/empty", b""),
    ]
    (tmp_path / "out").mkdir()
    subprocess.run(["cpio", "-idm", "--quiet"], input=initramfs.cpio(entries), cwd=tmp_path / "out", check=True)
    out = tmp_path / "out"
    assert (out / "d/f").read_bytes() == b"hello\n" and (out / "d/f").stat().st_mode & 0o777 == 0o640
    assert (out / "d/l").readlink() == Path("f") and (out / "empty").read_bytes() == b""
    assert len(initramfs.cpio(entries)) % 4 == 0


def test_sliver_archive_quotes_config_for_the_shell(tmp_path: Path) -> None:
    cfg = initramfs.SliverConfig("web", "10.1.2.3/24", "10.1.2.1", ("sh", "-c", "echo 'x'; $(rm -rf /)"), {"A": "b c"})
    (tmp_path / "out").mkdir()
    subprocess.run(["cpio", "-idm", "--quiet"], input=initramfs.sliver_archive(cfg), cwd=tmp_path / "out", check=True)
    got = subprocess.run(["sh", "-c", '. ./slicemesh/config; printf "%s|%s|%s" "$SLIVER_HOSTNAME" "$SLIVER_ADDRESS" "$SLIVER_GATEWAY"'],
                         cwd=tmp_path / "out", capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert got == "web|10.1.2.3/24|10.1.2.1"
    assert (tmp_path / "out/slicemesh/argv").read_bytes() == b"sh\0-c\0echo 'x'; $(rm -rf /)\0"
    assert (tmp_path / "out/slicemesh/env").read_bytes() == b"A=b c\0"
    with pytest.raises(ValueError):
        initramfs.sliver_archive(initramfs.SliverConfig("web", None, None, ("a\0b",), {}))


def test_frames_round_trip_in_any_split() -> None:
    frames = [p.Frame(p.T.STDOUT, 7, b"x" * 100), p.Frame(p.T.EXIT, 7, struct.pack(">i", -1)), p.Frame(p.T.HELLO_ACK, 0)]
    wire = b"".join(p.encode(f) for f in frames)
    dec = p.Decoder()
    got = [f for i in range(0, len(wire), 5) for f in dec.feed(wire[i : i + 5])]
    assert got == frames
    assert p.exit_code(got[1].payload) == -1
    with pytest.raises(p.ProtocolError):
        p.Decoder().feed(b"XX" + bytes(10))
    with pytest.raises(p.ProtocolError):
        p.encode(p.Frame(p.T.STDIN, 1, bytes(p.MAX_PAYLOAD + 1)))


def test_exec_payload_and_stdin_frames() -> None:
    body = p.exec_payload(["echo", "hi"], {"K": "v"})
    assert body == struct.pack(">II", 2, 1) + b"echo\0hi\0K=v\0"
    for bad in ([], ["a\0b"], ["x" * p.MAX_PAYLOAD]):
        with pytest.raises(p.ProtocolError):
            p.exec_payload(bad)
    frames = p.stdin_frames(3, bytes(p.MAX_PAYLOAD + 1), close=True)
    assert [len(f.payload) for f in frames] == [p.MAX_PAYLOAD, 1, 0] and all(f.channel == 3 for f in frames)
    assert p.stdin_frames(3, b"", close=False) == []


def test_meminfo_in_bytes() -> None:
    got = p.meminfo("MemTotal:          94688 kB\nMemFree:  10 kB\nHugePages_Total:       0\nbogus\n")
    assert got == {"MemTotal": 94688 * 1024, "MemFree": 10240, "HugePages_Total": 0}
