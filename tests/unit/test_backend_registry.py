"""The backend table: every row has its settings section, offers are checked against it."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import pytest

from node_agent.backends.registry import BACKENDS
from node_agent.build import backend_types, make_backends
from node_agent.settings import AgentSettings
from slices.errors import SpecError
from slices.isolation import ISOLATIONS

pytestmark = pytest.mark.timeout(10)


def test_every_backend_with_settings_has_its_section_in_the_agent_settings() -> None:
    hints = typing.get_type_hints(AgentSettings)
    fields = {f.name for f in dataclasses.fields(AgentSettings)}
    for bt in BACKENDS.values():
        assert bt.kinds and bt.kinds <= set(ISOLATIONS), bt.name
        if bt.settings is not None:
            assert bt.name in fields and hints[bt.name] is bt.settings, f"AgentSettings.{bt.name} is missing"


@pytest.mark.parametrize(
    ("offers", "where", "why"),
    [
        ({"vm": "runc"}, "backends.vm", "runc serves container isolation only"),
        ({"container": "qemu"}, "backends.container", "qemu serves vm isolation only"),
        ({"container": "docker"}, "backends.container", "unknown backend 'docker'; available: sim, runc, qemu"),
        ({"jail": "sim"}, "backends.jail", "unknown isolation kind; use container or vm"),
    ],
)
def test_offers_are_checked_against_the_table(offers: dict[str, str], where: str, why: str) -> None:
    with pytest.raises(SpecError) as err:
        backend_types(offers)
    assert err.value.path == where and why in str(err.value)


def test_one_object_per_backend_serving_each_of_its_kinds(tmp_path: Path) -> None:
    backends = make_backends({"container": "sim", "vm": "sim"}, "n1", tmp_path)
    assert backends["container"] is backends["vm"]
    assert backends["vm"].kinds == frozenset({"container", "vm"})
    only = make_backends({"vm": "sim"}, "n1", None)
    assert only["vm"].kinds == frozenset({"vm"})
