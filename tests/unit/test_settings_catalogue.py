"""Settings layering, the site catalogue and topologies, and slice lifecycle rules."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from controller.lifecycle import renewed_expiry, settled, slice_state
from controller.settings import ControllerSettings
from node_agent.backends.runc.settings import RuncSettings
from node_agent.settings import AgentSettings
from slices import geo
from slices.catalogue import REQUIRED, builtin_catalogue, load_topology, parse_topology, spread_nodes
from slices.errors import SpecError
from slices.settings import describe, load

MLAB = Path(__file__).resolve().parents[3] / "shared/data/mlab-sites.csv"
DAY = 86400.0

# ---- settings -----------------------------------------------------------------------------


def test_defaults_without_file_or_env() -> None:
    s = load(ControllerSettings, env={})
    assert s == ControllerSettings()
    assert s.listen == "tcp://*:7700"
    assert s.max_frame_bytes == 1024 * 1024
    assert s.liveness_misses == 3


def test_every_setting_has_a_help_line() -> None:
    for cls in (ControllerSettings, AgentSettings):
        rows = describe(cls)
        expected = set()
        for f in dataclasses.fields(cls):
            section = getattr(cls(), f.name)
            subs = dataclasses.fields(section) if dataclasses.is_dataclass(section) else ()
            expected |= {f"{f.name}.{g.name}" for g in subs} or {f.name}
        assert {r[0] for r in rows} == expected
        for name, _type, _default, help_text in rows:
            assert help_text.strip(), f"{cls.__name__}.{name} has no help"


def test_layering_defaults_file_env_overrides(tmp_path: Path) -> None:
    cfg = tmp_path / "controller.yaml"
    cfg.write_text("listen: tcp://*:7800\nheartbeat_period: 2.5\nliveness_misses: 5\nlog_level: debug\n")
    s = load(
        ControllerSettings,
        file=cfg,
        env={"SLICEMESH_LIVENESS_MISSES": "7", "SLICEMESH_LOG_LEVEL": "warning", "OTHER": "x"},
        overrides={"log_level": "error", "db": None},
    )
    assert s.listen == "tcp://*:7800"  # file
    assert s.heartbeat_period == 2.5  # file
    assert s.liveness_misses == 7  # env beats file, coerced to int
    assert s.log_level == "error"  # command line beats env
    assert s.db == ControllerSettings().db  # an unset (None) override changes nothing
    assert s.max_frame_bytes == 1024 * 1024  # default


def test_env_is_read_from_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLICEMESH_HEARTBEAT_PERIOD", "0.25")
    assert load(ControllerSettings).heartbeat_period == 0.25


def test_empty_file_is_all_defaults(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("# nothing\n")
    assert load(ControllerSettings, file=cfg, env={}) == ControllerSettings()


def test_unknown_key_in_file(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("listen: tcp://*:1\nheartbeat_perod: 1\n")
    with pytest.raises(SpecError) as err:
        load(ControllerSettings, file=cfg, env={})
    assert err.value.path == "heartbeat_perod"
    assert "unknown setting" in str(err.value)
    assert "heartbeat_period" in str(err.value)  # lists the known ones


def test_unknown_override() -> None:
    with pytest.raises(SpecError, match=r"bogus: unknown setting"):
        load(ControllerSettings, env={}, overrides={"bogus": 1})


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("liveness_misses: three\n", "liveness_misses"),
        ("heartbeat_period: fast\n", "heartbeat_period"),
        ("liveness_misses: true\n", "liveness_misses"),
        ("listen: [a, b]\n", "listen"),
        ("listen:\n", "listen"),
    ],
)
def test_bad_type_in_file(tmp_path: Path, text: str, path: str) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    with pytest.raises(SpecError) as err:
        load(ControllerSettings, file=cfg, env={})
    assert err.value.path == path
    assert str(cfg) in str(err.value)


def test_fractional_value_for_a_whole_number_setting_is_refused(tmp_path: Path) -> None:
    """``liveness_misses: 2.7`` must not silently become 2."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text("liveness_misses: 2.7\n")
    with pytest.raises(SpecError):
        load(ControllerSettings, file=cfg, env={})


def test_bad_type_in_env_names_the_variable() -> None:
    with pytest.raises(SpecError) as err:
        load(ControllerSettings, env={"SLICEMESH_HEARTBEAT_PERIOD": "soon"})
    assert err.value.path == "heartbeat_period"
    assert "$SLICEMESH_HEARTBEAT_PERIOD" in str(err.value)


def test_malformed_or_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"cannot read config"):
        load(ControllerSettings, file=tmp_path / "absent.yaml", env={})
    bad = tmp_path / "bad.yaml"
    bad.write_text("listen: [unclosed\n")
    with pytest.raises(SpecError, match=r"malformed YAML"):
        load(ControllerSettings, file=bad, env={})
    notmap = tmp_path / "list.yaml"
    notmap.write_text("- listen\n")
    with pytest.raises(SpecError, match=r"mapping"):
        load(ControllerSettings, file=notmap, env={})


def test_agent_settings_structured_values_from_file_and_env(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(
        "name: node-1\nsite: princeton\n"
        "location: {city: Princeton, country: US, region: north-america, lat: 40.34, lon: -74.65}\n"
        "capacity: {cpu: 4, memory: 8Gi}\nbackends: {container: sim, vm: sim}\n"
    )
    s = load(AgentSettings, file=cfg, env={"SLICEMESH_IMAGES": "[busybox, alpine]", "SLICEMESH_OVERBOOK": "2", "SLICEMESH_LABELS": "{rack: r7}"})
    assert s.name == "node-1" and s.site == "princeton"
    assert s.location == {"city": "Princeton", "country": "US", "region": "north-america", "lat": 40.34, "lon": -74.65}
    assert s.capacity == {"cpu": 4, "memory": "8Gi"}
    assert s.backends == {"container": "sim", "vm": "sim"}
    assert s.images == ["busybox", "alpine"]
    assert s.overbook == 2.0
    assert s.labels == {"rack": "r7"}
    assert s.reserve == AgentSettings().reserve  # default kept


def test_backend_sections_layer_key_by_key(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.yaml"
    cfg.write_text("runc: {pids_limit: 64, runtime: /usr/sbin/runc}\n")
    s = load(AgentSettings, file=cfg, env={"SLICEMESH_RUNC_PIDS_LIMIT": "99"}, overrides={"runc.stop_timeout": "2.5"})
    assert s.runc == RuncSettings(pids_limit=99, runtime="/usr/sbin/runc", stop_timeout=2.5)  # env beats file; the rest default


@pytest.mark.parametrize(
    ("text", "where", "why"),
    [
        ("runc: {pid_limit: 64}\n", "runc.pid_limit", "unknown setting"),
        ("runc: {pids_limit: many}\n", "runc.pids_limit", "not a valid int"),
        ("runc: 64\n", "runc", "must be a mapping"),
        ("pids_limit: 64\n", "pids_limit", "moved to runc.pids_limit"),
    ],
)
def test_bad_backend_sections_are_clear_errors(tmp_path: Path, text: str, where: str, why: str) -> None:
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(text)
    with pytest.raises(SpecError, match=why) as err:
        load(AgentSettings, file=cfg, env={})
    assert err.value.path == where


def test_agent_defaults_are_not_shared_between_instances() -> None:
    a, b = AgentSettings(), AgentSettings()
    a.reserve["cpu"] = 99
    assert b.reserve["cpu"] == 1


@pytest.mark.parametrize(("key", "value"), [("SLICEMESH_IMAGES", "busybox"), ("SLICEMESH_LOCATION", "[1, 2]"), ("SLICEMESH_LOCATION", "{unclosed")])
def test_agent_env_structured_values_must_have_the_right_shape(key: str, value: str) -> None:
    with pytest.raises(SpecError):
        load(AgentSettings, env={key: value})


def test_agent_location_in_norway(tmp_path: Path) -> None:
    """``country: NO`` in agent.yaml is Norway, as in slice specs; plain YAML 1.1 reads it as False."""
    cfg = tmp_path / "agent.yaml"
    cfg.write_text("location: {city: Oslo, country: NO, region: europe, lat: 59.94, lon: 10.72}\n")
    assert load(AgentSettings, file=cfg, env={}).location["country"] == "NO"


@pytest.mark.parametrize(("raw", "value"), [("true", True), ("0", False), ("off", False), ("YES", True)])
def test_bool_coercion_from_strings(raw: str, value: bool) -> None:
    from slices.settings import _coerce

    assert _coerce("flag", bool, raw, "test") is value
    with pytest.raises(SpecError):
        _coerce("flag", bool, "maybe", "test")


# ---- the built-in catalogue ---------------------------------------------------------------


def test_builtin_catalogue_coverage() -> None:
    sites = builtin_catalogue()
    assert len(sites) >= 60
    assert len({s.country for s in sites}) >= 20
    assert {s.region for s in sites} == set(geo.REGIONS)
    assert len({s.name for s in sites}) == len(sites)
    for s in sites:
        assert geo.is_country(s.country)
        assert -90 <= s.lat <= 90 and -180 <= s.lon <= 180
        assert s.machines >= 1
        assert s.city


def test_builtin_catalogue_coordinates_are_true() -> None:
    by_name = {s.name: s for s in builtin_catalogue()}
    princeton = by_name["princeton"]
    assert (princeton.city, princeton.country, princeton.region) == ("Princeton", "US", "north-america")
    assert geo.haversine_km(princeton.lat, princeton.lon, 40.3573, -74.6672) < 10  # Princeton, NJ


def test_spread_nodes_default_sim() -> None:
    picks = spread_nodes(builtin_catalogue(), 24)
    assert len(picks) == 24
    sites = {s.name for s, _ in picks}
    assert len(sites) == 12
    assert len({s.region for s, _ in picks}) >= 4
    assert len(set(picks)) == 24  # no (site, machine) twice
    for name in sites:
        assert sorted(i for s, i in picks if s.name == name) == [0, 1]


def test_spread_nodes_many_and_all() -> None:
    sites = builtin_catalogue()
    picks = spread_nodes(sites, 500)
    assert len(picks) == 500 and len(set(picks)) == 500
    every = spread_nodes(sites, None)
    assert len(every) == sum(s.machines for s in sites)


def test_mlab_topology_loads_as_it_is() -> None:
    if not MLAB.exists():
        pytest.skip(f"{MLAB} not found: the M-Lab topology lives in ../shared/data beside the clone")
    sites = load_topology(MLAB)
    assert len(sites) == 351
    assert sum(s.machines for s in sites) == 1161
    assert len({s.country for s in sites}) == 50
    assert len(spread_nodes(sites, None)) == 1161
    assert {s.region for s in sites} <= set(geo.REGIONS)


# ---- topology CSVs ------------------------------------------------------------------------

HEADER = "site,city,country,continent,lat,lon,machines\n"


def test_parse_topology_cleans_names_and_maps_continents() -> None:
    sites = parse_topology(HEADER + "Acc 01,Accra,gh,af,5.6,-0.17,4\nxyz,,NZ,OC,-37,174.8,0\n", "t.csv")
    assert [(s.name, s.city, s.country, s.region, s.machines) for s in sites] == [("acc-01", "Accra", "GH", "africa", 4), ("xyz", "xyz", "NZ", "oceania", 0)]


def test_missing_column() -> None:
    with pytest.raises(SpecError) as err:
        parse_topology("site,city,country,lat,lon,machines\nx,X,US,1,2,3\n", "t.csv")
    assert err.value.path == "t.csv"
    assert "continent" in str(err.value)
    assert set(REQUIRED) == {"site", "city", "country", "continent", "lat", "lon", "machines"}


@pytest.mark.parametrize(
    ("rows", "line", "phrase"),
    [
        ("a,A,US,NA,1,2,1\nb,B,XX,EU,1,2,1\n", 3, "ISO 3166"),
        ("a,A,UK,EU,1,2,1\n", 2, "ISO 3166"),
        ("a,A,US,NA,1,2,1\nb,B,DE,EUR,1,2,1\n", 3, "continent"),
        ("a,A,US,AN,1,2,1\n", 2, "continent"),
        ("a,A,US,NA,north,2,1\n", 2, "numbers"),
        ("a,A,US,NA,1,2,1.5\n", 2, "whole number"),
        ("a,A,US,NA,91,2,1\n", 2, "out of range"),
        ("a,A,US,NA,1,2,-1\n", 2, "negative"),
        ("a,A,US,NA,1,2,1\nA,B,US,NA,1,2,1\n", 3, "twice"),
        ("!!!,A,US,NA,1,2,1\n", 2, "empty site"),
        ("a,A,US,NA,1,2\n", 2, "numbers"),
    ],
)
def test_bad_rows_name_the_line(rows: str, line: int, phrase: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_topology(HEADER + rows, "topo.csv")
    assert err.value.path == f"topo.csv:{line}"
    assert phrase in str(err.value)


def test_no_sites_and_unreadable(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"no sites"):
        parse_topology(HEADER, "empty.csv")
    with pytest.raises(SpecError, match=r"cannot read"):
        load_topology(tmp_path / "absent.csv")


# ---- lifecycle ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("states", "expected"),
    [
        (["running", "running"], "running"),
        (["pending", "running"], "pending"),
        (["pending", "pending"], "pending"),
        (["running", "failed"], "degraded"),
        (["running", "lost"], "degraded"),
        (["pending", "failed"], "degraded"),
        (["failed", "failed"], "failed"),
        (["failed", "lost", "stopped"], "failed"),
        ([], "failed"),
        (["exited", "exited"], "exited"),
        (["exited", "running"], "running"),
        (["exited", "pending"], "pending"),
        (["exited", "failed"], "failed"),
        (["exited", "running", "lost"], "degraded"),
    ],
)
def test_slice_state(states: list[str], expected: str) -> None:
    assert slice_state(states) == expected
    assert slice_state(iter(states)) == expected  # any iterable


def test_expired_wins() -> None:
    assert slice_state(["running"], expired=True) == "expired"
    assert slice_state([], expired=True) == "expired"


def test_settled() -> None:
    assert [s for s in ("pending", "running", "degraded", "failed", "expired") if settled(s)] == ["running", "degraded", "failed", "expired"]


def test_renew_extends_from_current_expiry() -> None:
    now = 1_000_000.0
    assert renewed_expiry(now + 3 * DAY, 7 * DAY, now, 56 * DAY) == (now + 10 * DAY, False)


def test_renew_of_an_already_expired_lease_counts_from_now() -> None:
    now = 1_000_000.0
    assert renewed_expiry(now - DAY, 7 * DAY, now, 56 * DAY) == (now + 7 * DAY, False)


def test_renew_never_past_the_maximum_from_now() -> None:
    now = 1_000_000.0
    assert renewed_expiry(now + 50 * DAY, 7 * DAY, now, 56 * DAY) == (now + 56 * DAY, True)
    assert renewed_expiry(now + 49 * DAY, 7 * DAY, now, 56 * DAY) == (now + 56 * DAY, False)  # exactly at the cap
