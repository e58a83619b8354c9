"""A slice's code: the spec's ``code`` key and the bundle's packing and checks (pure)."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from slices import bundle
from slices.spec import SpecErrors, parse_spec

BASE = {"name": "coded", "description": "x"}


def errors(code: object) -> str:
    with pytest.raises(SpecErrors) as got:
        parse_spec({**BASE, "code": code})
    return str(got.value)


def test_code_is_a_path_or_an_uploaded_digest() -> None:
    assert parse_spec({**BASE, "code": {"path": "./probe"}}).code_path == "./probe"
    spec = parse_spec({**BASE, "code": {"digest": "a" * 64, "size": 10, "delivery": "push"}})
    assert spec.code is not None and (spec.code.delivery, spec.code.size) == ("push", 10)
    assert spec.sliver("coded-1").code == spec.code


@pytest.mark.parametrize(
    "code, says",
    [
        ({"path": "x", "mode": 1}, "code.mode"),
        ({"path": "x", "digest": "a" * 64, "size": 1}, "give path"),
        ({"digest": "g" * 64, "size": 1}, "code.digest"),
        ({"digest": "a" * 64}, "code.size"),
        ({"path": "x", "delivery": "carrier-pigeon"}, "code.delivery"),
        ("./probe", "code"),
    ],
)
def test_bad_code_says_which_key(code: object, says: str) -> None:
    assert says in errors(code)


def tar_of(*members: tarfile.TarInfo) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for m in members:
            t.addfile(m, io.BytesIO(b"x" * m.size) if m.isfile() else None)
    return buf.getvalue()


def member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    m = tarfile.TarInfo(name)
    m.type, m.linkname, m.size = kind, link, 1 if kind == tarfile.REGTYPE else 0
    return m


@pytest.mark.parametrize(
    "bad, says",
    [
        (member("../etc/cron.d/x"), "outside"),
        (member("/etc/passwd"), "outside"),
        (member("a", tarfile.SYMTYPE, "/etc/shadow"), "symlink out"),
        (member("d/a", tarfile.SYMTYPE, "../../x"), "symlink out"),
        (member("dev", tarfile.CHRTYPE), "not a file"),
    ],
)
def test_a_tarball_that_could_escape_is_refused(bad: tarfile.TarInfo, says: str) -> None:
    with pytest.raises(bundle.BundleError, match=says):
        bundle.check_tar(tar_of(member("ok.txt"), bad))


def test_packing_is_deterministic_and_refuses_links_out(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "f").write_text("hello")
    (src / "run.sh").write_text("echo hi")
    os.chmod(src / "run.sh", 0o700)
    os.symlink("sub/f", src / "link")
    first = bundle.pack_dir(src)
    os.utime(src / "sub" / "f", (1, 1))
    assert bundle.pack_dir(src) == first  # mtimes, owners: not part of it
    bundle.check_tar(first)
    bundle.unpack(first, tmp_path / "out")
    assert (tmp_path / "out" / "link").read_text() == "hello"
    assert os.stat(tmp_path / "out" / "run.sh").st_mode & 0o777 == 0o555
    os.symlink("/etc", src / "out")
    with pytest.raises(bundle.BundleError, match="symlink out"):
        bundle.pack_dir(src)
