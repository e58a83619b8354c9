"""Every benchmark's ``--quick`` version, run as a user types it, so that none can rot.

Each runs ``slicemesh bench NAME --quick --json`` as a subprocess and checks the figures its
issue names are there and sane. The full benchmarks (docs/benchmarks.md) are not run here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def bench(name: str, *extra: str, timeout: float = 40) -> dict[str, Any]:
    return bench_and_log(name, *extra, timeout=timeout)[0]


def bench_and_log(name: str, *extra: str, timeout: float = 40) -> tuple[dict[str, Any], str]:
    """The benchmark's JSON result and its stderr (the human table and notes)."""
    proc = subprocess.run(
        [sys.executable, "-m", "slices.cli", "bench", name, "--quick", "--json", *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, f"bench {name} failed ({proc.returncode}):\n{proc.stderr[-2000:]}"
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, f"stdout must hold exactly one JSON line, got {proc.stdout[:500]!r}"
    result: dict[str, Any] = json.loads(lines[0])
    assert result["machine"]["cores"] >= 1
    assert "anchor:" in proc.stderr and "machine:" in proc.stderr, "the human table goes to stderr with --json"
    return result, proc.stderr


def positive(result: dict[str, Any], *keys: str) -> None:
    for key in keys:
        assert isinstance(result[key], (int, float)) and result[key] > 0, f"{key} = {result[key]!r}"


@pytest.mark.timeout(30)
def test_placement_quick() -> None:
    r = bench("placement")
    positive(r, "slivers_per_s")
    assert r["sizes"][0]["nodes"] == 100


@pytest.mark.timeout(60)
@pytest.mark.parametrize("curve", [True, False], ids=["curve", "plaintext"])
def test_e2e_quick(curve: bool) -> None:
    r, log = bench_and_log("e2e", *(["--keep"] if curve else ["--no-curve"]))  # plaintext: the benchmark's own sockets, whole
    if curve:  # --keep: the cluster's logs and state stay for a look afterwards
        kept = [Path(line.split(": ", 1)[1]) for line in log.splitlines() if line.startswith("kept the cluster's directory")]
        try:
            assert len(kept) == 1 and (kept[0] / "controller.log").is_file(), log[-1000:]
        finally:
            for d in kept:
                shutil.rmtree(d, ignore_errors=True)
    positive(r, "slivers_per_s", "slice100_seconds")
    assert r["nodes"] == 100 and r["throughput"]["slivers"] > 0 and r["curve"] is curve
    assert r["slice100_seconds"] < 10


@pytest.mark.timeout(60)
def test_heartbeat_quick() -> None:
    r = bench("heartbeat")
    assert r["false_downs"] == 0 and r["down_at_end"] == 0
    positive(r, "controller_cpu_cores", "controller_rss_mib", "heartbeat_period_s")
    assert r["controller_cpu_cores"] < 2


@pytest.mark.timeout(60)
def test_churn_quick() -> None:
    r = bench("churn")
    positive(r, "create_p50_ms", "create_p99_ms", "delete_p50_ms", "creates_per_s", "deletes_per_s")
    assert r["create_p99_ms"] >= r["create_p50_ms"]
    assert r["errors"] == 0


@pytest.mark.timeout(80)
def test_footprint_quick() -> None:
    r = bench("footprint", timeout=60)
    positive(r, "agent_rss_mib", "controller_rss_mib_per_1000_nodes", "transport_kib_per_connection_first", "transport_kib_per_connection_steady")
    # libzmq's queues grow until they have cycled (512 messages each way), then stay
    assert r["transport_rounds"] >= 512 and r["transport_kib_per_connection_steady"] >= r["transport_kib_per_connection_first"]
    assert r["agent_rss_mib"] < 500
    assert r["agent_backends"] == {"container": "sim", "vm": "sim"}


@pytest.mark.timeout(150)
def test_responsiveness_quick() -> None:
    r = bench("responsiveness", timeout=140)
    assert r["nodes"] == 300 and r["cli_nodes"] == 100 and r["agents_nice"] == 19
    assert r["false_downs"] == 0, "nodes marked down while their agents ran:\n" + "\n".join(r["down_lines"])
    assert r["errors"] == []
    assert r["ping_ms"]["count"] > 0 and len(r["create_wait_cli_s"]) == 2
    assert {"show big", "nodes"} <= set(r["figures"])
    # 300 nodes: the 1 s period, or more if start-up left it stretched, as the nodes were told
    assert len(r["heartbeat_period_s"]) == 2 and all(1.0 <= p <= 8.0 for p in r["heartbeat_period_s"])


@pytest.mark.timeout(90)
def test_wan_quick() -> None:
    if os.geteuid() != 0 or not Path("/dev/net/tun").exists():
        pytest.skip("the WAN benchmark needs root and /dev/net/tun (network namespaces, a TUN device)")
    r = bench("wan", timeout=80)
    positive(r, "udp64_pps", "udp1400_mbit", "tcp_mbit", "model_rtt_ms", "rtt_p50_ms", "pings")
    assert r["path"] == "tun" and r["offload"] is True
    assert r["tun_left"] == [], "the daemon's TUN outlived it"
    assert abs(r["rtt_p50_ms"] - r["model_rtt_ms"]) < 0.15 * r["model_rtt_ms"]
    assert r["daemon_drops"]["write_errors"] == 0


@pytest.mark.timeout(200)
def test_isolation_quick() -> None:
    if os.geteuid() != 0:
        pytest.skip("the isolation benchmark needs root (cgroups, runc, TAP devices)")
    if not Path("/var/lib/slicemesh/images/kernel/current").exists():
        pytest.skip("no guest kernel under /var/lib/slicemesh/images (run `make setup`)")
    r = bench("isolation", timeout=180)  # 4 TCG boots: ~45 s on a loaded 2-core host
    for kind in ("bare", "container", "vm"):
        positive(r[kind], "start_p50_ms", "idle_rss_mib", "cpu_s", "disk_mib_s", "net_mbit_s", "cpu_vs_bare")
    assert r["bare"]["cpu_vs_bare"] == 1.0
    assert r["container"]["density"] >= 1 and r["vm"]["density"] >= 1 and r["vm"]["guest_mib"] == 96
    assert r["vm"]["accelerator"] in ("kvm", "tcg") and r["accelerator"].startswith(r["vm"]["accelerator"])
    positive(r, "bare_qemu_start_p50_ms", "vm_start_vs_bare_qemu")
    assert r["vm"]["start_p50_ms"] > r["container"]["start_p50_ms"] > r["bare"]["start_p50_ms"]


@pytest.mark.timeout(120)
def test_container_quick() -> None:
    if os.geteuid() != 0 or shutil.which("runc") is None:
        pytest.skip("the container benchmark needs root and runc (cgroups, netns)")
    r = bench("container", timeout=100)  # 5 + 5 starts, a burst of 10, two memory figures
    assert r["n"] == 5
    positive(r, "p50_ms", "bare_runc_p50_ms", "ratio_p50", "destroy_p50_ms", "burst_p50_ms", "idle_backend_rss_mib")
    assert isinstance(r["goals_met"], bool)


@pytest.mark.timeout(200)
def test_migration_quick() -> None:
    if os.geteuid() != 0:
        pytest.skip("the migration benchmark needs root (cgroups, runc, TAP devices)")
    if not Path("/var/lib/slicemesh/images/kernel/current").exists():
        pytest.skip("no guest kernel under /var/lib/slicemesh/images (run `make setup`)")
    r = bench("migration", timeout=180)  # one TCG boot, one live move, one cold move
    [vm] = r["vm_live"]
    [ctr] = r["container_cold"]
    assert vm["runs"] == 1 and vm["guest_mib"] >= 96 and vm["dirty_mib_per_250ms"] == 0
    for key in ("total_ms", "ram_mib", "disk_mib", "passes"):
        assert vm[key]["min"] > 0, key
    assert 0 < vm["downtime_ms"]["max"] <= vm["total_ms"]["max"]
    assert ctr["fill_mib"] == 8 and ctr["disk_mib"]["min"] >= 8 and 0 < ctr["downtime_ms"]["min"] < 60_000
    assert isinstance(r["goals_met"], bool)


@pytest.mark.timeout(120)
def test_codeship_quick() -> None:
    import tempfile

    before = set(Path(tempfile.gettempdir()).glob("smcode*"))
    r = bench("codeship", timeout=100)  # 4 simulated nodes, 2 MiB bundles
    assert set(Path(tempfile.gettempdir()).glob("smcode*")) <= before  # its bundles' sources went with it
    assert r["nodes"] == 4 and r["bundle_mib"] == 2
    pull, push = r["pull"], r["push"]
    assert push["copies_per_node"] == 1.0 and push["from_peers"] == 0 and push["seconds"] > 0, push
    # Each node got the pulled bundle once: from the controller, or from a peer that held it.
    assert round(pull["copies_per_node"] * 4) + pull["from_peers"] == 4 and pull["seconds"] > 0, pull
    assert r["cached"]["bytes_out_mib"] == 0 and r["cached"]["from_peers"] == 0 and r["goals_met"] is True


@pytest.mark.timeout(60)
def test_peers_quick() -> None:
    r = bench("peers")
    (size,) = r["sizes"]
    n = size["slivers"]
    assert size["whole_entries"] == n * n and size["change_entries"] == n, "whole: every address to every node; a change: one entry each"
    assert min(size["change_s"]) > 0 and min(size["whole_s"]) > 0


@pytest.mark.timeout(60)
def test_no_curve_is_plaintext_for_the_benchmark_only(tmp_path: Path) -> None:
    """``--no-curve`` (benchmarks/plaintext.py) runs a controller in plaintext, a peer's key in
    its routing identity; the same controller started normally answers no plaintext peer."""
    import zmq

    from slices import identity
    from slices.codec import decode, encode
    from slices.protocol import Ping
    from tests.conftest import wait_for

    def controller(plain: bool, name: str) -> tuple[subprocess.Popen[bytes], str, str]:
        ready, keys = tmp_path / f"{name}.url", tmp_path / f"{name}-keys"
        args = ["-m", "slices.cli", "controller", "--listen", "tcp://127.0.0.1:*", "--db", str(tmp_path / f"{name}.db"), "--keys-dir", str(keys), "--ready-file", str(ready)]
        proc = subprocess.Popen([sys.executable, *(["-m", "benchmarks.plaintext", *args] if plain else args)], cwd=ROOT, stderr=subprocess.DEVNULL)
        wait_for(ready.exists, timeout=30, what=f"the {name} controller")
        return proc, ready.read_text().strip(), identity.read(keys / "admin.identity.yaml").own.public

    def ping(url: str, key: str) -> bytes | None:
        s = zmq.Context.instance().socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.IDENTITY, b"\x01" + key.encode() + os.urandom(8))
        s.connect(url)
        try:
            try:  # a blocking send after the refused handshake dropped the pipe would wait forever
                s.send(encode(Ping(), id="p", sender="bench"), zmq.NOBLOCK)
            except zmq.Again:
                return None
            return s.recv() if s.poll(3000) else None
        finally:
            s.close()

    procs = []
    try:
        for plain in (True, False):
            proc, url, admin = controller(plain, "plain" if plain else "curve")
            procs.append(proc)
            answer = ping(url, admin)
            if plain:
                assert answer is not None and decode(answer).msg.result["principal"] == "user admin"  # type: ignore[attr-defined]
            else:
                assert answer is None, "a controller started as in production speaks only CURVE"
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=10)
