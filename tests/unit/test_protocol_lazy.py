"""The protocol package's topics loaded when first used (slices/protocol/__init__.py): every
name is still there, and the CLI starts without the topics it does not need."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import pytest

import slices.protocol as protocol

LAZY_TOPICS = sorted(set(protocol._LAZY.values()))


@pytest.mark.parametrize("topic", LAZY_TOPICS)
def test_each_lazy_name_is_its_topics_own(topic: str) -> None:
    module = importlib.import_module(f"slices.protocol.{topic}")
    names = {n for n, t in protocol._LAZY.items() if t == topic}
    for name in names:
        assert getattr(protocol, name) is getattr(module, name)
    exported = {n for n in protocol.__all__ if getattr(module, n, None) is not None and getattr(getattr(module, n), "__module__", "") == module.__name__}
    assert exported <= names, f"exported from {topic} but not in _LAZY: {sorted(exported - names)}"


def test_every_exported_name_resolves_and_an_unknown_one_raises() -> None:
    for name in protocol.__all__:
        assert getattr(protocol, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        protocol.Nope  # noqa: B018


def test_load_all_registers_every_topic_in_a_fresh_process() -> None:
    code = (
        "import slices.protocol as p, sys\n"
        "before = len(p.REGISTRY)\n"
        "p.load_all()\n"
        "print(before < len(p.REGISTRY), all(f'slices.protocol.{t}' in sys.modules for t in set(p._LAZY.values())))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == ["True", "True"]


def test_a_decoder_meeting_a_type_not_loaded_yet_loads_it() -> None:
    code = (
        "import sys, msgpack, slices.codec as c, slices.protocol as p\n"
        "before = 'slices.protocol.admin' in sys.modules\n"
        "frame = msgpack.packb({'v': p.PROTOCOL_VERSION, 'type': 'list_keys', 'id': 'x1', 'from': 'u', 'ts': 1.0, 'body': {}})\n"
        "print(before, type(c.decode(frame).msg).__name__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "ListKeys"]


def test_the_cli_starts_without_the_keys_agents_code_and_moves_topics() -> None:
    code = "import json, slices.cli, sys\nprint(json.dumps(sorted(m for m in sys.modules if m.startswith('slices.protocol.') or m == 'slices.codeupload')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    loaded = set(json.loads(out.stdout))
    assert not loaded & {f"slices.protocol.{t}" for t in LAZY_TOPICS}, f"loaded at start: {sorted(loaded)}"
    assert "slices.codeupload" not in loaded
