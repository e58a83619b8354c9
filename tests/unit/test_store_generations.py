"""A node's desired-set generation lives in its own narrow table: written, reopened, carried
over from a file written before the table, and gone with its node."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.store import Store

pytestmark = pytest.mark.timeout(30)

LOCATION = {"city": "Turin", "country": "IT", "region": "Europe", "lat": 45.07, "lon": 7.69}


def _info(name: str) -> dict[str, object]:
    return {"name": name, "site": "trn01", "location": LOCATION}


def _generations(store: Store) -> dict[str, int]:
    return {info["name"]: generation for info, _state, generation, _registered, _admin in store.nodes()}


def test_generations_are_written_and_survive_a_reopen(tmp_path: Path) -> None:
    store = Store(tmp_path / "c.db")
    with store.transaction():
        store.upsert_node(_info("n1"), "up", 1, 0.0)
        store.upsert_node(_info("n2"), "up", 1, 0.0)
    with store.transaction():
        store.set_generations([("n1", 5), ("n2", 3)])
    store.close()
    again = Store(tmp_path / "c.db")
    assert _generations(again) == {"n1": 5, "n2": 3}
    with again.transaction():
        again.upsert_node(_info("n1"), "down", 6, 0.0)  # a node's row written again keeps one generation
    assert _generations(again) == {"n1": 6, "n2": 3}


def test_a_file_from_before_the_table_keeps_its_generations(tmp_path: Path) -> None:
    store = Store(tmp_path / "c.db")
    with store.transaction():
        store.upsert_node(_info("n1"), "up", 1, 0.0)
        store.db.execute("DROP TABLE generations")  # as an older controller left it
        store.db.execute("UPDATE nodes SET generation=9 WHERE name='n1'")
    store.close()
    again = Store(tmp_path / "c.db")
    assert _generations(again) == {"n1": 9}
    assert again.db.execute("SELECT node, generation FROM generations").fetchall() == [("n1", 9)]
    with again.transaction():
        again.set_generations([("n1", 10)])
    again.close()
    assert _generations(Store(tmp_path / "c.db")) == {"n1": 10}  # copied once: not back to 9


def test_a_removed_node_takes_its_generation_with_it(tmp_path: Path) -> None:
    store = Store(tmp_path / "c.db")
    with store.transaction():
        store.upsert_node(_info("n1"), "up", 4, 0.0)
    with store.transaction():
        store.delete_node("n1")
    assert store.db.execute("SELECT count(*) FROM generations").fetchone()[0] == 0
    assert _generations(store) == {}
