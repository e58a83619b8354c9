"""Daemon settings and a node's own description: NaN, infinity and huge numbers are refused.

slices/settings.py (defaults -> YAML -> SLICEMESH_* -> command line) and node_agent/machine.py
(capacity, location, labels) read numbers a person typed; each case below once passed or
raised a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from controller.settings import ControllerSettings
from node_agent.machine import node_info, parse_capacity, parse_location
from node_agent.settings import AgentSettings
from slices.errors import SpecError
from slices.model import Capacity
from slices.settings import load

pytestmark = pytest.mark.timeout(30)

GOOD_LOCATION = {"city": "Princeton", "country": "US", "region": "north-america", "lat": 40.3, "lon": -74.6}


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("SLICEMESH_HEARTBEAT_PERIOD", "nan"),
        ("SLICEMESH_HEARTBEAT_PERIOD", "inf"),
        ("SLICEMESH_HEARTBEAT_PERIOD", "1e999"),
        ("SLICEMESH_RUNC_PIDS_LIMIT", str(2**64 + 1)),
        ("SLICEMESH_RUNC_PIDS_LIMIT", "9" * 5000),
        ("SLICEMESH_OVERBOOK", "-inf"),
    ],
)
def test_env_numbers_must_be_finite_and_fit_64_bits(key: str, value: str) -> None:
    with pytest.raises(SpecError) as err:
        load(AgentSettings, env={key: value})
    assert f"${key}" in str(err.value) and len(str(err.value)) < 200


@pytest.mark.parametrize("text", ["heartbeat_period: .nan\n", "heartbeat_period: .inf\n", f"liveness_misses: {2**64}\n", f"liveness_misses: {'9' * 5000}\n"])
def test_file_numbers_must_be_finite_and_fit_64_bits(tmp_path: Path, text: str) -> None:
    f = tmp_path / "controller.yaml"
    f.write_text(text)
    with pytest.raises(SpecError):
        load(ControllerSettings, file=f)


def test_a_float_setting_from_a_huge_whole_number_is_refused() -> None:
    with pytest.raises(SpecError):
        load(AgentSettings, overrides={"overbook": 10**400})


@pytest.mark.parametrize(
    "doc",
    [
        {"cpu": float("nan")},
        {"cpu": float("inf")},
        {"cpu": "nan"},
        {"cpu": 10**400},
        {"memory": float("inf")},
        {"memory": float("nan")},
        {"memory": 2**64},
        {"disk": "9999999999999999999999Ti"},
    ],
)
def test_capacity_must_be_finite_and_fit_64_bits(doc: dict[str, Any]) -> None:
    with pytest.raises(SpecError) as err:
        parse_capacity(doc, "capacity", fallback=Capacity(4, 2**30, 2**30))
    assert err.value.path.startswith("capacity.")


@pytest.mark.parametrize(
    ("change", "path"),
    [
        ({"lat": float("nan")}, "location"),
        ({"lon": float("inf")}, "location"),
        ({"lat": 10**400}, "location"),
        ({"city": "Evil\x1b[2J"}, "location.city"),
        ({"city": "a\u202eb"}, "location.city"),
        ({"city": ""}, "location.city"),
    ],
)
def test_location_numbers_and_city(change: dict[str, Any], path: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_location({**GOOD_LOCATION, **change})
    assert err.value.path == path


def info(**kw: Any) -> Any:
    base: dict[str, Any] = dict(
        name="n1",
        site="s1",
        location=parse_location(GOOD_LOCATION),
        capacity=Capacity(4, 2**30, 2**30),
        reserve=Capacity(0, 0, 0),
        offers={"container": "sim"},
        images=[],
        labels={},
        overbook=1.0,
    )
    return node_info(**{**base, **kw})


@pytest.mark.parametrize("overbook", [float("nan"), float("inf"), 0.0, -1.0, 101.0])
def test_overbook_is_finite_and_bounded(overbook: float) -> None:
    with pytest.raises(SpecError) as err:
        info(overbook=overbook)
    assert err.value.path == "overbook"


@pytest.mark.parametrize("labels", [{"rack": "r\x1b[31m"}, {"k\n": "v"}, {"rack": {"nested": 1}}, {"rack": "x" * 201}])
def test_labels_are_short_printable_text(labels: dict[str, Any]) -> None:
    with pytest.raises(SpecError) as err:
        info(labels=labels)
    assert err.value.path.startswith("labels")


def test_ordinary_labels_and_cities_pass() -> None:
    node = info(labels={"rack": "r12", "gpu": True, "cores": 8}, location=parse_location({**GOOD_LOCATION, "city": "São Paulo"}))
    assert node.labels == {"rack": "r12", "gpu": "True", "cores": "8"} and node.location.city == "São Paulo"
