"""The wide-area model: distances to delays, settings validation, the subnet -> node table."""

from __future__ import annotations

import pytest

from node_agent.wan.model import WanNode, WanSettings, check_table, one_way_ms, rtt_ms
from node_agent.wan.probe import Paths
from slices.errors import SpecError
from slices.geo import haversine_km

pytestmark = pytest.mark.timeout(10)

PRINCETON = WanNode("princeton-1", "princeton", 40.3431, -74.6551, "10.100.0.0/24", "sm-aaaaaa")
PRINCETON2 = WanNode("princeton-2", "princeton", 40.3431, -74.6551, "10.100.1.0/24", "sm-bbbbbb")
TOKYO = WanNode("tokyo-1", "tokyo", 35.7126, 139.7620, "10.100.2.0/24", "sm-cccccc")


def test_one_way_is_access_plus_inflated_fibre_plus_access() -> None:
    s = WanSettings()
    km = haversine_km(PRINCETON.lat, PRINCETON.lon, TOKYO.lat, TOKYO.lon)
    assert 10_700 < km < 11_000
    assert one_way_ms(s, PRINCETON, TOKYO) == pytest.approx(1.0 + km * 5.0 * 1.5 / 1000 + 1.0)
    # Princeton - Tokyo: ~83 ms one way, ~167 ms round trip (real pings: ~160-180 ms)
    assert 160 < rtt_ms(s, PRINCETON, TOKYO) < 175
    assert one_way_ms(s, PRINCETON, TOKYO) == one_way_ms(s, TOKYO, PRINCETON)


def test_same_site_is_the_lan_and_same_node_is_nothing() -> None:
    s = WanSettings(lan_ms=0.25)
    assert one_way_ms(s, PRINCETON, PRINCETON2) == 0.25
    assert one_way_ms(s, PRINCETON, PRINCETON) == 0.0


def test_constants_and_per_site_access_are_settable() -> None:
    base = one_way_ms(WanSettings(access_ms=0), PRINCETON, TOKYO)
    assert one_way_ms(WanSettings(access_ms=0, inflation=3.0), PRINCETON, TOKYO) == pytest.approx(base * 2)
    assert one_way_ms(WanSettings(access_ms=0, us_per_km=10.0), PRINCETON, TOKYO) == pytest.approx(base * 2)
    s = WanSettings(access_ms=2.0, site_access_ms={"tokyo": 7.0})
    assert one_way_ms(s, PRINCETON, TOKYO) == pytest.approx(base + 2.0 + 7.0)


@pytest.mark.parametrize(
    ("field", "value"),
    [("mode", "fast"), ("inflation", -1.0), ("loss", 1.5), ("jitter_ms", float("nan")), ("site_access_ms", {"x": -1}), ("queue_packets", 0)],
)
def test_bad_settings_are_refused_with_the_field_named(field: str, value: object) -> None:
    with pytest.raises(SpecError) as err:
        WanSettings(**{field: value})  # type: ignore[arg-type]
    assert f"wan.{field}" in err.value.reason


def test_settings_round_trip_and_unknown_keys() -> None:
    s = WanSettings(inflation=2.0, loss=0.01, site_access_ms={"tokyo": 3.0})
    assert WanSettings.from_map(s.to_map()) == s
    with pytest.raises(SpecError, match="unknown setting"):
        WanSettings.from_map({"inflaton": 2.0})


def test_node_maps_are_checked() -> None:
    assert WanNode.from_map(PRINCETON.to_map()) == PRINCETON
    with pytest.raises(SpecError, match="missing subnet"):
        WanNode.from_map({k: v for k, v in PRINCETON.to_map().items() if k != "subnet"})
    with pytest.raises(SpecError, match="not an IPv4 network"):
        WanNode.from_map({**PRINCETON.to_map(), "subnet": "10.100.0.1/24"})
    with pytest.raises(SpecError, match="longer than 15"):
        WanNode.from_map({**PRINCETON.to_map(), "bridge": "x" * 16})
    with pytest.raises(SpecError, match="lat and lon"):
        WanNode.from_map({**PRINCETON.to_map(), "lat": 91})


def test_table_must_not_overlap_or_repeat() -> None:
    check_table([PRINCETON, PRINCETON2, TOKYO])
    wide = WanNode("wide", "x", 0, 0, "10.100.0.0/16", "sm-dddddd")
    with pytest.raises(SpecError, match="overlaps"):
        check_table([PRINCETON2, TOKYO, wide])
    with pytest.raises(SpecError, match="appears twice"):
        check_table([PRINCETON, PRINCETON])
    with pytest.raises(SpecError, match="also another node's bridge"):
        check_table([PRINCETON, WanNode("other", "x", 0, 0, "10.9.0.0/24", PRINCETON.bridge)])


def test_path_choice() -> None:
    both = Paths(True, True, "netem works", "TUN works")
    tun_only = Paths(False, True, "this kernel has no netem qdisc", "TUN works")
    neither = Paths(False, False, "this kernel has no netem qdisc", "no TUN device")
    assert both.choose("auto")[0] == "netem"
    assert both.choose("tun")[0] == "tun"
    assert tun_only.choose("auto") == ("tun", "this kernel has no netem qdisc; using the user-space delay daemon")
    assert tun_only.choose("off")[0] == "off"
    with pytest.raises(RuntimeError, match="netem path was asked for"):
        tun_only.choose("netem")
    with pytest.raises(RuntimeError, match="no wide-area path"):
        neither.choose("auto")
