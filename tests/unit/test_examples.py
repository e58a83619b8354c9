"""Every example spec shipped in examples/ is valid as it is."""

from __future__ import annotations

from pathlib import Path

import pytest

from slices.spec import load_spec_text

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))


def test_there_are_examples() -> None:
    assert len(EXAMPLES) >= 2


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_is_valid(path: Path) -> None:
    spec = load_spec_text(path.read_text(), str(path))
    assert spec.name == path.stem
    assert spec.placement.count >= 1
