"""docs/protocol.md names every message type and every error code the code can send."""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

from slices.errors import ERROR_CODES, SliceMeshError
from slices.protocol import REGISTRY, load_all

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs/protocol.md").read_text()


def test_every_message_type_is_documented() -> None:
    load_all()
    missing = [name for name in REGISTRY if f"`{name}`" not in DOC]
    assert not missing, f"docs/protocol.md does not name: {missing}"


def test_every_error_code_is_documented() -> None:
    missing = [code for code in ERROR_CODES if f"| `{code}` |" not in DOC]
    assert not missing, f"docs/protocol.md does not list error codes: {missing}"


def _subclasses(cls: type) -> list[type]:
    out = []
    for sub in cls.__subclasses__():
        out += [sub, *_subclasses(sub)]
    return out


def test_every_code_the_code_sends_is_a_known_code() -> None:
    """Codes appear as class attributes and as literals at Error(...)/code=... call sites."""
    import controller.api
    import node_agent.agent  # noqa: F401

    for mod in pkgutil.iter_modules(controller.api.__path__):  # every handler's error classes, whatever ran before
        importlib.import_module(f"controller.api.{mod.name}")

    used = {getattr(cls, "code", "error") for cls in _subclasses(SliceMeshError)}
    pattern = re.compile(r'(?:\bError\(|\bcode=)"([a-z-]+)"')
    for package in ("slices", "controller", "node_agent"):
        for path in (ROOT / package).rglob("*.py"):
            used |= set(pattern.findall(path.read_text()))
    unknown = sorted(used - set(ERROR_CODES))
    assert not unknown, f"error codes sent but not in slices.errors.ERROR_CODES: {unknown}"
