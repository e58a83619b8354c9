"""``slicemesh sim``'s wide-area flags: made from the settings schema, checked before anything starts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from node_agent.wan.model import WanSettings
from slices.cli import parser

pytestmark = pytest.mark.timeout(60)
ROOT = Path(__file__).resolve().parents[2]


def test_every_setting_has_a_flag_and_they_reach_the_settings() -> None:
    from node_agent.wan.flags import wan_settings_from_args

    a = parser().parse_args(["sim", "--wan", "tun", "--wan-inflation", "2", "--wan-loss", "0.01", "--wan-site-access-ms", "tokyo=3", "--wan-site-access-ms", "mit=0.5", "--no-wan-realtime"])
    s = wan_settings_from_args(a)
    assert s == WanSettings(mode="tun", inflation=2.0, loss=0.01, site_access_ms={"tokyo": 3.0, "mit": 0.5}, realtime=False)
    assert wan_settings_from_args(parser().parse_args(["sim"])) == WanSettings()


def test_bad_values_fail_in_one_line_before_anything_starts(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "slices.cli", "sim", "--wan-loss", "2", "--state-dir", str(tmp_path / "s")], capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == ["slicemesh: invalid-spec: wan.loss: must be between 0 and 1, not 2.0"]
    assert not (tmp_path / "s").exists()
    proc = subprocess.run([sys.executable, "-m", "slices.cli", "sim", "--wan-site-access-ms", "tokyo"], capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert proc.returncode == 2 and "is not SITE=MS" in proc.stderr


def test_the_sim_backend_says_its_wide_area_is_off(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "slices.cli", "sim", "--nodes", "2", "--state-dir", str(tmp_path / "s")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stdout.readline().startswith("controller: tcp://")
        said = [proc.stderr.readline().strip() for _ in range(3)]
        assert "wide area between nodes: off (the sim backend's slivers send no packets)" in said, said
    finally:
        proc.terminate()
        proc.wait(timeout=30)
