"""Controller + simulated agents over real ZeroMQ sockets on random ports, real SQLite."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from slices.client import Client, RemoteError
from slices.geo import haversine_km
from slices.protocol import CreateSlice, DeleteSlice, ListNodes, ListSlices, PlanSlice, RenewSlice, ShowSlice
from slices.statefile import read_scratch
from slices.yamlio import load_yaml
from tests.conftest import AgentsThread, ControllerThread, FakeClock, wait_for

pytestmark = pytest.mark.timeout(60)

SPEC = """
name: probe
description: probes a CDN from six vantage points
resources: {cpu: 0.5, memory: 256Mi, disk: 1Gi}
placement:
  count: 6
  locations:
    - {region: europe, count: 2}
    - {country: JP}
    - {site: princeton}
    - {near: {lat: 37.87, lon: -122.27}, within_km: 800}
  min_distance_km: 300
"""


def spec(text: str = SPEC, **changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = load_yaml(text)
    doc.update(changes)
    return doc


def state_of(c: Client, name: str) -> str:
    return str(c.call(ShowSlice(name=name)).state)


def allocated_cpu(c: Client) -> float:
    return sum(n.allocated.cpu for n in c.call(ListNodes()).nodes)


def test_slice_is_placed_where_asked_and_runs(cluster: tuple[ControllerThread, AgentsThread]) -> None:
    controller, agents = cluster
    with controller.as_user("alice", site="princeton") as c:
        c.call(CreateSlice(spec=spec()))
        wait_for(lambda: state_of(c, "probe") == "running", what="slice running")
        s = c.call(ShowSlice(name="probe"))
    assert s.owner == "alice" and s.site == "princeton" and len(s.slivers) == 6
    by_request: dict[str, list[dict[str, Any]]] = {}
    for v in s.slivers:
        by_request.setdefault(v.request, []).append(v)
        assert v.state == "running" and v.backend == "sim"
    assert [v.region for v in by_request["region europe"]] == ["europe", "europe"]
    assert by_request["country JP"][0].country == "JP"
    assert by_request["site princeton"][0].site == "princeton"
    near = by_request["near (37.87, -122.27) within 800 km"][0]
    assert haversine_km(37.87, -122.27, near.lat, near.lon) <= 800
    sites = [v.site for v in s.slivers]
    assert len(set(sites)) == 6, "distinct: site is the default"
    for a in s.slivers:
        for b in s.slivers:
            if a is not b:
                assert haversine_km(a.lat, a.lon, b.lat, b.lon) >= 300
    # the agents really hold those slivers
    held = {sid for agent in agents.agents for sid in agent.desired}
    assert held == {v.id for v in s.slivers}


def test_infeasible_is_explained_and_allocates_nothing(cluster: tuple[ControllerThread, AgentsThread]) -> None:
    controller, _ = cluster
    with controller.client() as c:
        with pytest.raises(RemoteError) as err:
            c.call(CreateSlice(spec=spec(placement={"locations": [{"country": "JP", "count": 3}]})))
        assert err.value.code == "infeasible"
        assert "placement.locations[0] (country JP) wants 3" in err.value.reason
        assert "share a site" in err.value.reason
        assert " | suggestions: feasible with " in err.value.reason  # computed changes that would fit
        with pytest.raises(RemoteError) as err:
            c.call(CreateSlice(spec=spec(resources={"cpu": 64, "memory": "1Gi"})))
        assert "lack free cpu" in err.value.reason
        assert c.call(ListSlices()).slices == []
        assert allocated_cpu(c) == 0


def test_invalid_spec_is_refused_with_the_field_path(cluster: tuple[ControllerThread, AgentsThread]) -> None:
    controller, _ = cluster
    with controller.client() as c:
        with pytest.raises(RemoteError) as err:
            c.call(CreateSlice(spec=spec(placement={"locations": [{"near": {"lat": 1, "lon": 2}, "within_km": 0}]})))
        assert err.value.code == "invalid-spec"
        assert "placement.locations[0].within_km: must be > 0" in err.value.reason
        with pytest.raises(RemoteError) as err:
            c.call(CreateSlice(spec=spec(name="../etc")))
        assert err.value.reason.startswith("name:")
        assert c.call(ListSlices()).slices == []


def test_dry_run_changes_nothing(cluster: tuple[ControllerThread, AgentsThread]) -> None:
    controller, _ = cluster
    with controller.client() as c:
        plan = c.call(PlanSlice(spec=spec()))
        assert plan.dry_run and plan.placed == 6 and len(plan.explanation) == 5
        assert c.call(ListSlices()).slices == []
        assert allocated_cpu(c) == 0


def test_duplicate_name_and_delete_releases(cluster: tuple[ControllerThread, AgentsThread]) -> None:
    controller, agents = cluster
    with controller.client() as c:
        c.call(CreateSlice(spec=spec()))
        with pytest.raises(RemoteError) as err:
            c.call(CreateSlice(spec=spec()))
        assert err.value.code == "exists"
        assert allocated_cpu(c) == pytest.approx(3.0)
        c.call(DeleteSlice(name="probe"))
        assert allocated_cpu(c) == 0
        wait_for(lambda: all(not a.desired and not a.backends["container"].list() for a in agents.agents), what="agents to destroy the slivers")
        with pytest.raises(RemoteError) as err:
            c.call(ShowSlice(name="probe"))
        assert err.value.code == "not-found"


def test_agent_loss_marks_node_down_and_back_up(cluster: tuple[ControllerThread, AgentsThread], nodes24: list[dict[str, Any]], tmp_path: Path) -> None:
    controller, agents = cluster
    with controller.client() as c:
        c.call(CreateSlice(spec=spec()))
        wait_for(lambda: state_of(c, "probe") == "running", what="slice running")
        agents.crash()  # every agent gone at once, as in a power cut: no goodbye
        wait_for(lambda: all(n.state == "down" for n in c.call(ListNodes()).nodes), timeout=5, what="nodes down")
        s = c.call(ShowSlice(name="probe"))
        assert s.state == "failed"
        assert all(v.state == "lost" and ("is down" in v.reason or "cannot be re-placed" in v.reason) for v in s.slivers)
        back = AgentsThread(controller, nodes24, state_dir=tmp_path / "agents")
        try:
            wait_for(lambda: all(n.state == "up" for n in c.call(ListNodes()).nodes), what="nodes up again")
            wait_for(lambda: state_of(c, "probe") == "running", what="slivers re-adopted and running")
        finally:
            back.stop()


def test_agent_restart_readopts_without_recreating(cluster: tuple[ControllerThread, AgentsThread], nodes24: list[dict[str, Any]], tmp_path: Path) -> None:
    controller, agents = cluster
    with controller.client() as c:
        c.call(CreateSlice(spec=spec()))
        wait_for(lambda: state_of(c, "probe") == "running", what="slice running")
        before = {sid: dict(rec) for a in agents.agents for sid, rec in a.backends["container"].slivers.items()}  # type: ignore[attr-defined]
        agents.stop()
        back = AgentsThread(controller, nodes24, state_dir=tmp_path / "agents")
        try:
            wait_for(lambda: all(a.registered for a in back.agents), what="agents registered again")
            after = {sid: dict(rec) for a in back.agents for sid, rec in a.backends["container"].slivers.items()}  # type: ignore[attr-defined]
            changed = {sid: (before.get(sid), after.get(sid)) for sid in before.keys() | after.keys() if before.get(sid) != after.get(sid)}
            assert not changed, f"re-adopted slivers keep their start time: none was recreated; changed: {changed}"
            view = c.call(ShowSlice(name="probe"))
            assert view.state == "running", [(v.id, v.node, v.state, v.reason) for v in view.slivers]
        finally:
            back.stop()


def test_simulated_machines_write_their_state_with_their_next_heartbeat(cluster: tuple[ControllerThread, AgentsThread], tmp_path: Path) -> None:
    """Not at each change (hundreds of simulated machines per process made the disk the
    bottleneck and their heartbeats late), but without waiting for a stop either: what a
    crash of the host process loses is at most one heartbeat period's changes."""
    controller, agents = cluster
    with controller.client() as c:
        c.call(CreateSlice(spec=spec()))
        wait_for(lambda: state_of(c, "probe") == "running", what="slice running")
        placed = {v.node: v.id for v in c.call(ShowSlice(name="probe")).slivers}
    by_name = {a.name: a for a in agents.agents}

    def written() -> bool:
        for node, sid in placed.items():
            cache = json.loads(read_scratch(tmp_path / "agents" / node / "desired.json") or b"{}")  # not written yet: {}
            if sid not in {s["id"] for s in cache.get("slivers", [])} or by_name[node].unsaved:
                return False
        return True

    wait_for(written, timeout=5, what="every node's desired set on disk while its agent runs")
    assert agents.thread.is_alive()


def test_controller_restart_keeps_every_slice(tmp_path: Path, nodes24: list[dict[str, Any]]) -> None:
    first = ControllerThread(tmp_path / "c.db")
    agents = AgentsThread(first, nodes24, state_dir=tmp_path / "agents")
    try:
        with first.client() as c:
            wait_for(lambda: len(c.call(ListNodes()).nodes) == 24, what="registration")
            for i in range(3):
                c.call(CreateSlice(spec=spec(name=f"s{i}")))
            wait_for(lambda: all(state_of(c, f"s{i}") == "running" for i in range(3)), what="slices running")
            before = {f"s{i}": c.call(ShowSlice(name=f"s{i}")) for i in range(3)}
        first.stop()
        second = ControllerThread(tmp_path / "c.db", **first.endpoints())
        try:
            with second.client() as c:
                for name, old in before.items():
                    new = c.call(ShowSlice(name=name))
                    assert new.expires == old.expires
                    assert [v.id for v in new.slivers] == [v.id for v in old.slivers]
                    assert [v.node for v in new.slivers] == [v.node for v in old.slivers]
                wait_for(lambda: all(a.registered and not a.controller_lost for a in agents.agents), what="agents talking to the new controller")
                assert all(state_of(c, n) == "running" for n in before)
                c.call(CreateSlice(spec=spec(name="after")))
                wait_for(lambda: state_of(c, "after") == "running", what="new slice after restart")
        finally:
            second.stop()
    finally:
        agents.stop()


def test_lease_expiry_and_renew(tmp_path: Path, nodes24: list[dict[str, Any]]) -> None:
    clock = FakeClock()
    controller = ControllerThread(tmp_path / "c.db", clock=clock)
    agents = AgentsThread(controller, nodes24[:4], state_dir=None)
    try:
        with controller.client() as c:
            wait_for(lambda: len(c.call(ListNodes()).nodes) == 4, what="registration")
            c.call(CreateSlice(spec=spec(placement={"count": 2}, lifetime="1h")))
            c.call(CreateSlice(spec=spec(name="long", placement={"count": 1}, lifetime="1h")))
            renewed = c.call(RenewSlice(name="long", seconds=7 * 86400))
            shown = c.call(ShowSlice(name="long"))
            assert renewed.expires == shown.expires and not renewed.capped
            capped = c.call(RenewSlice(name="long", seconds=80 * 86400))
            assert capped.capped and capped.expires <= clock() + 56 * 86400 + 1
            clock.offset = 2 * 3600  # past the first slice's lease
            wait_for(lambda: state_of(c, "probe") == "expired", what="expiry")
            assert c.call(ShowSlice(name="probe")).slivers == []
            assert state_of(c, "long") != "expired"
            wait_for(lambda: sum(len(a.desired) for a in agents.agents) == 1, what="agents to drop expired slivers")
            with pytest.raises(RemoteError):
                c.call(RenewSlice(name="probe", seconds=3600))
            c.call(CreateSlice(spec=spec(placement={"count": 1})))  # the name is free again
    finally:
        agents.stop()
        controller.stop()


def test_partial_slice_with_min_count(cluster: tuple[ControllerThread, AgentsThread]) -> None:
    controller, _ = cluster
    with controller.client() as c:
        s = c.call(CreateSlice(spec=spec(placement={"locations": [{"country": "JP", "count": 3}], "min_count": 1})))
        assert s.slivers_placed == 1 and s.partial


def test_retried_create_is_applied_once(cluster: tuple[ControllerThread, AgentsThread]) -> None:
    from slices.codec import encode
    from tests.integration.test_wire import send_and_collect

    controller, _ = cluster
    d = controller.dealer("retrying-client")
    try:
        replies = send_and_collect(d, encode(CreateSlice(spec=spec()), id="retry-me", sender="retrying-client"), 3)
        assert all(r.type == "ok" for r in replies)
        assert len({tuple(v["id"] for v in r.msg.result["slivers"]) for r in replies}) == 1  # type: ignore[attr-defined]
        with controller.client() as c:
            assert [s.name for s in c.call(ListSlices()).slices] == ["probe"]
            assert allocated_cpu(c) == pytest.approx(3.0)
    finally:
        d.close()


def test_a_failed_write_leaves_no_partial_slice(cluster: tuple[ControllerThread, AgentsThread], monkeypatch: pytest.MonkeyPatch) -> None:
    """Fault injection: the SQLite write of a new slice fails; memory and agents see nothing."""
    import sqlite3

    controller, agents = cluster

    def broken(*args: object, **kwargs: object) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(controller.server.store, "insert_slice", broken)
    with controller.client() as c:
        with pytest.raises(RemoteError) as err:
            c.call(CreateSlice(spec=spec()))
        assert err.value.code == "unavailable" and "disk I/O error" in err.value.reason and "reads still work" in err.value.reason
        assert c.call(ListSlices()).slices == []
        assert allocated_cpu(c) == 0
        monkeypatch.undo()
        c.call(CreateSlice(spec=spec()))  # and the controller is fine afterwards
        wait_for(lambda: state_of(c, "probe") == "running", what="slice running after the fault")
    assert all(len(a.desired) <= 1 for a in agents.agents)
