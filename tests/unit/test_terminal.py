"""slices/terminal.py and render.py: what others chose reaches the screen only as visible escapes."""

from __future__ import annotations

import io
import sys
from typing import Any

import pytest

from slices import render
from slices.terminal import clear_screen, escaped_output, find_unprintable, printable, printable_lines

pytestmark = pytest.mark.timeout(30)

HOSTILE = "\x1b[2J\x1b]0;pwned\x07\x9b31m\u202eevil\r\n\t\x00\ud800"


def test_printable_escapes_every_control_character_visibly() -> None:
    out = printable(HOSTILE)
    assert out == "\\x1b[2J\\x1b]0;pwned\\x07\\x9b31m\\u202eevil\\r\\n\\t\\x00\\ud800"
    assert out.isprintable()
    out.encode("utf-8")  # no lone surrogate left


def test_printable_keeps_ordinary_unicode() -> None:
    for text in ("São Paulo", "東京", "👩‍🔬 lab", "Zürich — naïve", "a\\x1b stays as typed"):
        assert printable(text) == text
        assert find_unprintable(text) is None


def test_printable_lines_keeps_newlines_only() -> None:
    assert printable_lines("row 1\x1b[31m\nrow 2\t") == "row 1\\x1b[31m\nrow 2\\t"


@pytest.mark.parametrize(("text", "words"), [("ab\x1b", "U+001B"), ("x\u202e", "right-to-left override"), ("\ud800", "lone surrogate"), ("a\nb", "at character 2")])
def test_find_unprintable_names_the_character_and_where(text: str, words: str) -> None:
    found = find_unprintable(text)
    assert found is not None and words in found


def test_escaped_output_gates_text_and_passes_raw_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    raw = io.BytesIO()
    out = io.TextIOWrapper(raw, encoding="utf-8", write_through=True)
    err = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    with escaped_output():
        print(f"node {HOSTILE}")
        print("error \x1b[31m", file=sys.stderr)
        sys.stdout.buffer.write(b"\x1b[1mraw sliver output\n")  # exec/logs: the program's own bytes
        clear_screen()  # top: the one sequence the CLI sends on purpose
        sys.stdout.flush()
    assert sys.stdout is out and sys.stderr is err
    text = raw.getvalue().decode("utf-8", "surrogateescape")
    assert "node \\x1b[2J\\x1b]0;pwned\\x07\\x9b31m\\u202eevil\\r\n" in text  # the printed newline stays
    assert "\x1b[1mraw sliver output\n" in text and "\x1b[H\x1b[2J" in text
    assert err.getvalue() == "error \\x1b[31m\n"


def test_escaped_output_survives_a_terminal_that_is_not_utf8(monkeypatch: pytest.MonkeyPatch) -> None:
    raw = io.BytesIO()
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(raw, encoding="ascii", write_through=True))
    with escaped_output():
        print("Zürich")
    assert raw.getvalue() == b"Z\\xfcrich\n"


def sliver(**kw: Any) -> dict[str, Any]:
    base = {"node": "n1", "site": "s", "city": "c", "country": "US", "region": "europe", "request": "anywhere", "backend": "sim", "state": "failed", "usage": None, "reason": "r"}
    return {**base, **kw}


def test_tables_escape_cells_so_rows_stay_aligned() -> None:
    out = render.placement_table([sliver(city="Evil\x1b[2J\nCity", reason="oom\x1b]0;x\x07"), sliver(node="n2")], show_state=True)
    assert "\x1b" not in out and "\x07" not in out
    lines = out.splitlines()
    assert len(lines) == 3
    assert lines[1].index("europe") == lines[2].index("europe")  # widths count the escapes as shown


def test_a_hostile_description_shows_as_escapes() -> None:
    s = {"name": "x", "state": "running", "description": "hi\x1b[31m\nslivers 99 of 99", "expires": None, "slivers": []}
    out = render.slice_text(s)
    assert "hi\\x1b[31m\\nslivers 99 of 99" in out and "\x1b" not in out


def test_nodes_and_sites_from_agents_are_escaped() -> None:
    node = {
        "name": "n\x1b[8m",
        "site": "s\u202e",
        "city": "c",
        "country": "US",
        "region": "europe",
        "state": "up",
        "backends": {"container": "sim\x07"},
        "capacity": {"cpu": 4, "memory": 2**30},
        "allocated": {"cpu": 0, "memory": 0},
        "slivers": 0,
    }
    out = render.nodes_text([node]) + render.sites_text([{"name": "s\x1b", "city": "c\n", "country": "US", "region": "e", "lat": 0.0, "lon": 0.0, "nodes": 1, "up": 1}])
    assert all(line.isprintable() for line in out.splitlines())


def test_writelines_passes_the_gate_too(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    with escaped_output():
        sys.stdout.writelines(["a\x1b\n", "b\x07"])
    assert out.getvalue() == "a\\x1b\nb\\x07"
