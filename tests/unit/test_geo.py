"""slices/geo.py: great-circle distances, ISO country codes and regions."""

from __future__ import annotations

import math

import pytest

from slices import geo

LONDON = (51.5074, -0.1278)
PARIS = (48.8566, 2.3522)
NEW_YORK = (40.7128, -74.0060)
LOS_ANGELES = (34.0522, -118.2437)
TOKYO = (35.6762, 139.6503)
SYDNEY = (-33.8688, 151.2093)


@pytest.mark.parametrize(
    ("a", "b", "km", "tol"),
    [
        (LONDON, PARIS, 344, 3),
        (NEW_YORK, LOS_ANGELES, 3936, 10),
        (TOKYO, SYDNEY, 7823, 20),
        ((0.0, 0.0), (0.0, 180.0), math.pi * geo.EARTH_RADIUS_KM, 1e-6),
        ((90.0, 0.0), (-90.0, 0.0), math.pi * geo.EARTH_RADIUS_KM, 1e-6),
        ((10.0, 20.0), (-10.0, -160.0), 20015, 1),
        ((0.0, 0.0), (0.0, 1.0), 111.195, 0.01),
    ],
)
def test_haversine_known_pairs(a: tuple[float, float], b: tuple[float, float], km: float, tol: float) -> None:
    assert geo.haversine_km(*a, *b) == pytest.approx(km, abs=tol)
    assert geo.haversine_km(*b, *a) == pytest.approx(geo.haversine_km(*a, *b))  # symmetric


@pytest.mark.parametrize("point", [LONDON, (0.0, 0.0), (90.0, 45.0), (-33.0, 179.99)])
def test_haversine_same_point_is_zero(point: tuple[float, float]) -> None:
    assert geo.haversine_km(*point, *point) == pytest.approx(0.0, abs=1e-9)


def test_haversine_across_the_date_line_is_short() -> None:
    assert geo.haversine_km(0.0, 179.5, 0.0, -179.5) == pytest.approx(111.195, abs=0.01)


def test_haversine_never_exceeds_half_circumference() -> None:
    half = math.pi * geo.EARTH_RADIUS_KM
    for lat in range(-90, 91, 15):
        for lon in range(-180, 181, 30):
            d = geo.haversine_km(lat, lon, -lat, lon + 180)
            assert 0 <= d <= half + 1e-6
            assert d == pytest.approx(half, rel=1e-9)


@pytest.mark.parametrize("code", ["US", "JP", "NO", "DE", "GB", "BR", "ZA", "AU", "IN"])
def test_is_country_true_for_iso_codes(code: str) -> None:
    assert geo.is_country(code)


@pytest.mark.parametrize("code", ["UK", "XX", "EU", "USA", "", "U", None, 1, False])
def test_is_country_false_for_non_codes(code: object) -> None:
    # UK is a common mistake: the ISO 3166 code is GB
    assert not geo.is_country(code)


@pytest.mark.parametrize("code", ["us", "jp", "No"])
def test_is_country_is_case_sensitive(code: str) -> None:
    # the spec and catalogue upper-case codes before asking; geo itself only knows upper case
    assert not geo.is_country(code)
    assert geo.is_country(code.upper())


def test_iso_list_is_complete_enough() -> None:
    codes = geo.iso_countries()
    assert 240 <= len(codes) <= 260
    assert all(len(c) == 2 and c.isupper() for c in codes)


def test_regions() -> None:
    assert geo.REGIONS == ("africa", "asia", "europe", "north-america", "oceania", "south-america")
    assert set(geo.CONTINENT_TO_REGION) == {"AF", "AS", "EU", "NA", "OC", "SA"}
    assert set(geo.CONTINENT_TO_REGION.values()) == set(geo.REGIONS)
