"""What a simulation starts and stops: the wide area between its simulated machines.

    wan = Wan(settings, prefix="sm1", state_dir=d)
    wan.decide()            # probe the kernel, pick netem / tun / off (before the nodes start)
    wan.start(nodes)        # the subnet -> node table, once the bridges exist
    wan.status()            # path, why, model, the daemon's counters
    wan.stop()              # everything it added is removed

The TUN path runs ``node_agent.wan.daemon`` as a child that dies with its parent; the netem
path runs one ``tc -batch`` and needs no process. Either way each node's firewall (refusing
whatever slivers send through the host) is told the simulation's subnets are peers while it
runs (``firewall.open_peers``), so traffic between simulated machines passes. Netlink (pyroute2, ~0.2 s to import) is
loaded only when a path is actually set up, so simulations without real packets do not pay.
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from node_agent import firewall
from node_agent.wan import netem
from node_agent.wan.model import WanNode, WanSettings, check_table
from slices.daemon import die_with_parent
from slices.errors import SliceMeshError
from slices.waiting import wait_until

if TYPE_CHECKING:
    from node_agent.wan.routing import Forwarding

log = logging.getLogger(__name__)


class Wan:
    def __init__(self, settings: WanSettings, *, prefix: str, state_dir: Path, netns: str | None = None, log_level: str = "warning") -> None:
        self.settings = settings
        self.prefix = prefix
        self.dir = state_dir
        self.netns = netns  # run the TUN path inside this namespace (tests and benchmarks)
        self.log_level = log_level
        self.path = "off"
        self.reason = "not started"
        self.nodes: list[WanNode] = []
        self.proc: subprocess.Popen[bytes] | None = None
        self._forwarding: Forwarding | None = None

    @property
    def table(self) -> int:
        from node_agent.wan import routing

        return routing.table_id(self.prefix)

    @property
    def stats_file(self) -> Path:
        return self.dir / "wan-stats.json"

    def decide(self) -> str:
        """Probe the kernel and pick the path for ``settings.mode``; raises if it cannot be had."""
        if self.settings.mode == "off":
            self.path, self.reason = "off", "turned off"
            return self.path
        from node_agent.wan.probe import detect

        try:
            self.path, self.reason = detect().choose(self.settings.mode)
        except RuntimeError as exc:
            raise SliceMeshError(f"wide-area emulation: {exc}") from None
        if self.path == "netem" and self.netns is not None:
            raise SliceMeshError("wide-area emulation: the netem path runs in the host namespace only")
        return self.path

    def start(self, nodes: Sequence[WanNode], timeout: float = 15.0) -> None:
        check_table(nodes)
        self.nodes = list(nodes)
        if self.path != "off" and self.netns is None:  # a test's private namespace holds no node firewall
            try:
                firewall.open_peers([n.bridge for n in self.nodes], [n.subnet for n in self.nodes])
            except firewall.FirewallError as exc:
                raise SliceMeshError(f"wide-area emulation: {exc}") from None
        if self.path == "tun":
            self._start_daemon(timeout)
        elif self.path == "netem":
            from node_agent.wan import routing

            self._forwarding = routing.Forwarding()
            try:
                self._forwarding.enable(n.bridge for n in self.nodes)
                netem.remove([n.bridge for n in self.nodes])
                netem.apply(netem.tc_lines(self.nodes, self.settings))
            except (routing.RoutingError, netem.NetemError) as exc:
                self.stop()
                raise SliceMeshError(f"wide-area emulation (netem): {exc}") from None
        log.info("wide area: %s (%s)", self.path, self.reason)

    def _start_daemon(self, timeout: float) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        config, ready = self.dir / "wan.json", self.dir / "wan.ready"
        ready.unlink(missing_ok=True)
        from node_agent.wan import routing

        doc = {"tun": routing.tun_name(self.prefix), "table": self.table, "nodes": [n.to_map() for n in self.nodes], "settings": self.settings.to_map(), "stats_period": 1.0}
        config.write_text(json.dumps(doc))
        argv = [sys.executable, "-m", "node_agent.wan.daemon", "--config", str(config), "--ready-file", str(ready), "--stats-file", str(self.stats_file), "--log-level", self.log_level]
        if self.netns:
            argv += ["--netns", self.netns]
        with open(self.dir / "wan.log", "ab") as logf:
            self.proc = subprocess.Popen(argv, stdout=logf, stderr=logf, stdin=subprocess.DEVNULL, preexec_fn=die_with_parent)
        proc = self.proc

        def ready_or_dead() -> bool:
            if proc.poll() is not None:
                tail = (self.dir / "wan.log").read_text(errors="replace").strip().splitlines()[-1:]
                self.proc = None
                raise SliceMeshError(f"the wide-area delay daemon exited: {tail[0] if tail else 'no output'}")
            return ready.exists()

        try:
            wait_until(ready_or_dead, timeout, "the wide-area delay daemon", max_delay=0.1)
        except TimeoutError:
            self.stop()
            raise SliceMeshError(f"the wide-area delay daemon was not ready within {timeout:g} s") from None

    def stop(self) -> None:
        """Stop the daemon (it removes its rules), then sweep rules a killed daemon left; the
        nodes' firewalls refuse routed traffic again."""
        if self.nodes and self.path != "off" and self.netns is None:
            try:
                firewall.close_peers([n.bridge for n in self.nodes])
            except firewall.FirewallError as exc:
                log.warning("%s", exc)
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
            from pyroute2 import IPRoute

            from node_agent.wan import routing

            with IPRoute(netns=self.netns) if self.netns else IPRoute() as ipr:
                routing.sweep_rules(ipr, self.table)
        if self._forwarding is not None:
            netem.remove([n.bridge for n in self.nodes])
            self._forwarding.restore()
            self._forwarding = None

    def _read_stats(self) -> dict[str, Any] | None:
        try:
            doc: dict[str, Any] = json.loads(self.stats_file.read_text())
            return doc
        except (OSError, ValueError):
            return None

    def fresh_stats(self, timeout: float = 5.0) -> dict[str, Any]:
        """The daemon's counters as of now (it writes them on SIGUSR1)."""
        if self.proc is None:
            raise SliceMeshError("the wide-area delay daemon is not running")
        asked = time.time()
        self.proc.send_signal(signal.SIGUSR1)
        doc: dict[str, Any] = wait_until(lambda: (d := self._read_stats()) is not None and d["time"] >= asked and d, timeout, "the WAN daemon's counters")
        return doc

    def status(self) -> dict[str, Any]:
        """For ``slicemesh nodes`` and benchmarks: the path, why, the model, the daemon's counters."""
        out: dict[str, Any] = {"path": self.path, "reason": self.reason, "nodes": len(self.nodes), "settings": self.settings.to_map()}
        if self.path == "tun":
            out["stats"] = self._read_stats()
            out["pid"] = self.proc.pid if self.proc is not None else None
        return out

    def running(self) -> bool:
        """False only when the daemon was started and has died since."""
        return self.proc is None or self.proc.poll() is None
