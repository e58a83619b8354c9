"""slices/units.py: what a person writes in YAML -> plain numbers, and back for display."""

from __future__ import annotations

import pytest

from slices import units

Ki, Mi, Gi, Ti = 1024, 1024**2, 1024**3, 1024**4


@pytest.mark.parametrize(
    ("value", "cores"),
    [(0.5, 0.5), (2, 2.0), ("500m", 0.5), ("1.5", 1.5), ("2000m", 2.0), (" 250m ", 0.25), ("4", 4.0)],
)
def test_parse_cpu_accepts_cores_and_millicores(value: object, cores: float) -> None:
    assert units.parse_cpu(value) == pytest.approx(cores)
    assert isinstance(units.parse_cpu(value), float)


@pytest.mark.parametrize("value", [0, -1, 0.0, "0m", "0", "-0.5", "abc", "1.5 cores", True, False, None, [1], "nan", "inf", float("nan")])
def test_parse_cpu_rejects(value: object) -> None:
    with pytest.raises(ValueError) as err:
        units.parse_cpu(value)
    assert str(err.value)  # always says why


def test_parse_cpu_error_says_what_is_accepted() -> None:
    with pytest.raises(ValueError, match=r"cores.*millicores"):
        units.parse_cpu("abc")
    with pytest.raises(ValueError, match=r"> 0"):
        units.parse_cpu(0)


@pytest.mark.parametrize(
    ("value", "n"),
    [
        ("256Mi", 256 * Mi),
        ("1Gi", Gi),
        (1024, 1024),
        ("1024", 1024),
        ("1.5Gi", int(1.5 * Gi)),
        ("4Ki", 4 * Ki),
        ("2Ti", 2 * Ti),
        (2.0, 2),
        ("512 Mi", 512 * Mi),
    ],
)
def test_parse_bytes(value: object, n: int) -> None:
    got = units.parse_bytes(value)
    assert got == n
    assert isinstance(got, int)


@pytest.mark.parametrize("value", ["256MB", "1G", "1gi", "256mi", "1KB", "Mi", "", "-1Mi"])
def test_parse_bytes_rejects_non_binary_suffixes_naming_them(value: str) -> None:
    with pytest.raises(ValueError) as err:
        units.parse_bytes(value)
    for suffix in ("Ki", "Mi", "Gi", "Ti"):
        assert suffix in str(err.value)


@pytest.mark.parametrize("value", [0, -5, 1.5, "0", "0Mi", "0.5", True, None, [256]])
def test_parse_bytes_rejects_non_positive_or_fractional(value: object) -> None:
    with pytest.raises(ValueError):
        units.parse_bytes(value)


@pytest.mark.parametrize(("value", "bits"), [("10Mbit", 10_000_000), ("1Gbit", 1_000_000_000), ("500Kbit", 500_000), ("1.5Mbit", 1_500_000)])
def test_parse_bandwidth(value: str, bits: int) -> None:
    assert units.parse_bandwidth(value) == bits


@pytest.mark.parametrize("value", ["10mbps", "10mbit", "10MB", "10", 10, 10.0, None, "0Kbit", "0.5Kbit", "Mbit"])
def test_parse_bandwidth_rejects(value: object) -> None:
    with pytest.raises(ValueError):
        units.parse_bandwidth(value)


def test_parse_bandwidth_error_names_the_suffixes() -> None:
    with pytest.raises(ValueError, match=r"Kbit Mbit Gbit"):
        units.parse_bandwidth("10mbps")


@pytest.mark.parametrize(("value", "seconds"), [("14d", 14 * 86400), ("90m", 5400), ("12h", 43200), ("2w", 14 * 86400), ("1m", 60)])
def test_parse_duration(value: str, seconds: int) -> None:
    assert units.parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["14", "1y", "-1d", 0, 14, "0d", "1.5d", "d", "", None, "14s"])
def test_parse_duration_rejects(value: object) -> None:
    with pytest.raises(ValueError) as err:
        units.parse_duration(value)
    assert str(err.value)


def test_parse_duration_error_names_the_units() -> None:
    with pytest.raises(ValueError, match=r"m h d w"):
        units.parse_duration("1y")


@pytest.mark.parametrize(
    ("n", "text"),
    [(256 * Mi, "256Mi"), (Gi, "1Gi"), (int(1.5 * Gi), "1.5Gi"), (1000, "1000"), (4 * Ki, "4Ki"), (3 * Ti, "3Ti"), (0, "0")],
)
def test_format_bytes(n: int, text: str) -> None:
    assert units.format_bytes(n) == text


@pytest.mark.parametrize("text", ["256Mi", "1Gi", "1.5Gi", "4Ki", "2Ti", "1000"])
def test_format_bytes_round_trips_through_parse(text: str) -> None:
    assert units.format_bytes(units.parse_bytes(text)) == text


@pytest.mark.parametrize(("bits", "text"), [(10_000_000, "10Mbit"), (1e9, "1Gbit"), (1.5e9, "1.5Gbit"), (500_000, "500Kbit"), (500, "500bit")])
def test_format_bandwidth(bits: float, text: str) -> None:
    assert units.format_bandwidth(bits) == text


@pytest.mark.parametrize(("seconds", "text"), [(14 * 86400, "14d0h"), (5400, "1h30m"), (45, "0m45s"), (-3600, "-1h0m"), (86400 + 7200, "1d2h"), (0, "0m0s")])
def test_format_duration(seconds: float, text: str) -> None:
    assert units.format_duration(seconds) == text


@pytest.mark.parametrize(("cores", "text"), [(0.5, "0.5"), (2.0, "2"), (0.25, "0.25")])
def test_format_cpu(cores: float, text: str) -> None:
    assert units.format_cpu(cores) == text


# ---- bounds: NaN, infinity, numbers over 64 bits and endless text are refused --------------


@pytest.mark.parametrize(
    "value", [float("inf"), float("-inf"), float("nan"), 10**400, 2**63, "1e400", "nan", "inf", "9" * 41, "9" * 5000, "9" * 5000 + "m"]
)
def test_parse_cpu_refuses_what_is_not_a_finite_64_bit_number(value: object) -> None:
    with pytest.raises(ValueError) as err:
        units.parse_cpu(value)
    assert "finite" in str(err.value) or "64 bits" in str(err.value) or "too long" in str(err.value)


@pytest.mark.parametrize("value", [float("inf"), float("nan"), 10**400, 2**63, "9" * 5000, "9999999999999999999Ti", "8388608Ti"])
def test_parse_bytes_refuses_what_does_not_fit_64_bits(value: object) -> None:
    with pytest.raises(ValueError):
        units.parse_bytes(value)
    assert units.parse_bytes(2**63 - 1) == 2**63 - 1


@pytest.mark.parametrize("value", ["99999999999999999999Gbit", "9" * 5000 + "Gbit"])
def test_parse_bandwidth_refuses_what_does_not_fit_64_bits(value: str) -> None:
    with pytest.raises(ValueError):
        units.parse_bandwidth(value)


def test_parse_duration_refuses_endless_digits() -> None:
    with pytest.raises(ValueError, match="too long"):
        units.parse_duration("9" * 5000 + "d")


def test_bounds_name_the_limit_in_the_unit_people_write() -> None:
    with pytest.raises(ValueError, match=r"at most 16Ti, got '17Ti'"):
        units.parse_bytes("17Ti", maximum=16 * Ti)
    with pytest.raises(ValueError, match=r"at least 4Mi, got '1Mi'"):
        units.parse_bytes("1Mi", minimum=4 * Mi)
    with pytest.raises(ValueError, match=r"at most 32Gbit"):
        units.parse_bandwidth("40Gbit", maximum=32 * 10**9)
    with pytest.raises(ValueError, match=r"at most 56d, got '9w'"):
        units.parse_duration("9w", maximum=56 * 86400)
    with pytest.raises(ValueError, match=r"at most 256 cores"):
        units.parse_cpu(300, maximum=256)
    assert units.parse_bytes("1.5Gi", maximum=16 * Ti) == int(1.5 * Gi)  # exact, no float rounding
    assert units.parse_bytes("0.5Ki") == 512


@pytest.mark.parametrize(("seconds", "text"), [(56 * 86400, "56d"), (7200, "2h"), (90, "90s"), (60, "1m")])
def test_duration_text(seconds: int, text: str) -> None:
    assert units.duration_text(seconds) == text
