"""The SQLite store of desired state: sites, nodes, slices, slivers, allocations.

WAL mode; one transaction per slice change; sliver state updates are batched by the server
loop into one transaction per loop turn. A big slice is written or deleted in parts, each its
own transaction (``write_in_parts``, ``delete_in_parts``), under a slice state that marks it
unfinished: a crash between parts leaves a row the next start drops (``drop_unfinished``), so
a change is either whole or was never made. Nothing here knows about sockets.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Generator, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from controller.storefile import StoreError, cluster_identity, connect

SCHEMA_VERSION = 2

WRITING = "writing"  # a slice whose rows are being written in parts: not created until its last part
DELETING = "deleting"  # a deleted slice whose rows are being removed in parts
UNFINISHED = (WRITING, DELETING)
PART_ROWS = 500  # slivers written or removed per part of a big slice: ~8-10 ms of SQLite (1,000 were 15-20)

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sites (
    name TEXT PRIMARY KEY, city TEXT NOT NULL, country TEXT NOT NULL, region TEXT NOT NULL,
    lat REAL NOT NULL, lon REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS nodes (
    name TEXT PRIMARY KEY,
    site TEXT NOT NULL REFERENCES sites(name),
    info TEXT NOT NULL,            -- NodeInfo as JSON
    state TEXT NOT NULL,           -- up | down
    generation INTEGER NOT NULL,   -- its desired-set generation when it registered (files before meta's 'generations')
    registered REAL NOT NULL
);
-- Desired-set generations: the store keeps only the largest ever given to any node (meta key
-- 'generations', one row whatever a change's size); a restarted controller gives every node
-- the next. This table held one per node, written 10,000 rows at a time by a slice on every
-- node; it is read only from files written before (their largest counts), never written.
CREATE TABLE IF NOT EXISTS generations (
    node TEXT PRIMARY KEY REFERENCES nodes(name) ON DELETE CASCADE,
    generation INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS slices (
    name TEXT PRIMARY KEY,
    owner TEXT,
    spec TEXT NOT NULL,            -- the submitted document, as JSON
    state TEXT NOT NULL,
    created REAL NOT NULL,
    expires REAL NOT NULL,
    request_id TEXT,
    site TEXT                      -- the owner's site, which its quota counts against
);
CREATE TABLE IF NOT EXISTS slivers (
    id TEXT PRIMARY KEY,
    slice TEXT NOT NULL REFERENCES slices(name) ON DELETE CASCADE,
    request INTEGER NOT NULL,      -- index into the slice's location requests
    state TEXT NOT NULL,
    reason TEXT,
    spec TEXT NOT NULL             -- SliverSpec as JSON
);
CREATE TABLE IF NOT EXISTS allocations (
    sliver TEXT PRIMARY KEY REFERENCES slivers(id) ON DELETE CASCADE,
    node TEXT NOT NULL REFERENCES nodes(name),
    cpu REAL NOT NULL, memory INTEGER NOT NULL, disk INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS allocations_node ON allocations(node);
CREATE TABLE IF NOT EXISTS moves (
    sliver TEXT PRIMARY KEY REFERENCES slivers(id) ON DELETE CASCADE,
    to_node TEXT NOT NULL REFERENCES nodes(name),
    started REAL NOT NULL,
    why TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    slice TEXT NOT NULL, sliver TEXT, node TEXT, ts REAL NOT NULL, event TEXT NOT NULL, detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_slice ON events(slice);
CREATE TABLE IF NOT EXISTS quarantine (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL, name TEXT NOT NULL, data TEXT NOT NULL, reason TEXT NOT NULL, ts REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS slivers_slice ON slivers(slice);
CREATE TABLE IF NOT EXISTS replies (
    key TEXT NOT NULL,             -- the caller's public key
    id TEXT NOT NULL,              -- its request id
    ts REAL NOT NULL,
    summary TEXT,                  -- what the change was (JSON), written with the change itself
    payload BLOB,                  -- the reply sent, once it was
    PRIMARY KEY (key, id)
);
"""


@dataclass(frozen=True)
class SliceRow:
    name: str
    owner: str | None
    spec: dict[str, Any]
    state: str
    created: float
    expires: float
    request_id: str | None
    site: str | None = None


@dataclass(frozen=True)
class SliverRow:
    id: str
    slice: str
    request: int
    state: str
    reason: str | None
    spec: dict[str, Any] | str  # or its JSON text (a create of 10,000 alike slivers serialises one, then splices ids)
    node: str
    cpu: float
    memory: int
    disk: int
    moves: int = 0


class Store:
    def __init__(self, path: str | Path, *, new_cluster: bool = False) -> None:
        self.path = str(path)
        self.db = connect(self.path)
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA foreign_keys=ON")
        created = self.db.execute("SELECT count(*) FROM sqlite_master WHERE name='meta'").fetchone()[0] == 0
        self.db.executescript(SCHEMA)
        row = self.db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        if row is None:
            self.db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        elif int(row[0]) == 1:
            self._migrate_1_to_2()
        elif int(row[0]) != SCHEMA_VERSION:
            raise StoreError(f"{self.path}: schema v{row[0]}, this controller needs v{SCHEMA_VERSION}: use a matching controller version")
        # Columns added since schema 2 first shipped: added in place, old rows get the default.
        self._ensure_column("nodes", "admin", "TEXT NOT NULL DEFAULT 'active'")
        self._ensure_column("slivers", "moves", "INTEGER NOT NULL DEFAULT 0")
        self._ensure_column("moves", "plan", "TEXT NOT NULL DEFAULT ''")  # a state-carrying move's (records.MovePlan)
        self.cluster = cluster_identity(self.db, self.path, created=created, new_cluster=new_cluster)
        #: The request being handled, if it changes state (set by the server): every
        #: transaction commits a marker that it was applied, so a retry after a crash that
        #: came before its reply is answered, not applied a second time.
        self.applying: tuple[str, str] | None = None
        self._saved = 0

    def _ensure_column(self, table: str, column: str, decl: str) -> None:
        if column not in {r[1] for r in self.db.execute(f"PRAGMA table_info({table})")}:
            self.db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")

    def _migrate_1_to_2(self) -> None:
        """Protocol 2 carries a sliver's resources as one vector, not four loose fields; a
        slice's quota is counted against its owner's site."""
        with self.transaction():
            self.db.execute("ALTER TABLE slices ADD COLUMN site TEXT")
            for sid, raw in self.db.execute("SELECT id, spec FROM slivers").fetchall():
                spec = json.loads(raw)
                if "resources" not in spec:
                    spec["resources"] = {k: spec.pop(k, None) or 0 for k in ("cpu", "memory", "disk", "bandwidth")}
                    self.db.execute("UPDATE slivers SET spec=? WHERE id=?", (json.dumps(spec), sid))
            self.db.execute("UPDATE meta SET value=? WHERE key='schema'", (str(SCHEMA_VERSION),))

    @contextmanager
    def transaction(self, summary: dict[str, Any] | None = None, *, part: bool = False) -> Iterator[sqlite3.Connection]:
        """All or nothing. A write the disk refuses (full, I/O error) rolls back and becomes a
        ``StoreError`` a handler answers with; the caller's memory is untouched, since every
        change writes the store first. ``summary``: what the change was, kept with the
        marker of the request applying it (see ``applying``). ``part``: one part of a change
        written over several transactions, which does not mark the request applied (the
        change's own transaction does)."""
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise StoreError(f"the controller cannot write its database {self.path} ({exc}); changes are refused, reads still work") from None
        try:
            yield self.db
            if self.applying is not None and not part:
                self._mark_applied(self.applying, summary)
            self.db.execute("COMMIT")  # may fail too (a full disk shows here): roll back then
        except BaseException as exc:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.OperationalError):
                raise StoreError(f"the controller cannot write its database {self.path} ({exc}); changes are refused, reads still work") from None
            raise

    def close(self) -> None:
        self.db.close()

    # ---- requests applied and their replies (retries across a restart) ----------------------

    def _mark_applied(self, request: tuple[str, str], summary: dict[str, Any] | None) -> None:
        self.db.execute(
            "INSERT INTO replies (key, id, ts, summary) VALUES (?,?,?,?) ON CONFLICT(key, id) DO UPDATE SET summary=coalesce(excluded.summary, summary)",
            (*request, time.time(), json.dumps(summary) if summary is not None else None),
        )

    def save_replies(self, replies: list[tuple[tuple[str, str], bytes]], keep: int) -> None:
        """Replies to applied requests, in one transaction; only the newest ``keep`` replies
        are kept (a retry comes within seconds, not after thousands of requests)."""
        with self.transaction():
            now = time.time()
            self.db.executemany(
                "INSERT INTO replies (key, id, ts, payload) VALUES (?,?,?,?) ON CONFLICT(key, id) DO UPDATE SET payload=excluded.payload",
                [(*request, now, payload) for request, payload in replies],
            )
            before, self._saved = self._saved, self._saved + len(replies)
            if before // 512 != self._saved // 512:
                self.db.execute("DELETE FROM replies WHERE rowid <= (SELECT max(rowid) FROM replies) - ?", (keep,))

    def reply_to(self, request: tuple[str, str]) -> tuple[bytes | None, dict[str, Any] | None] | None:
        """(reply, summary) of a request this store saw applied, or None if it never was."""
        row = self.db.execute("SELECT payload, summary FROM replies WHERE key=? AND id=?", request).fetchone()
        if row is None:
            return None
        return (bytes(row[0]) if row[0] is not None else None), (_json(row[1]) if row[1] is not None else None)

    # ---- writes (callers wrap several in one transaction) --------------------------------

    def upsert_node(self, info: dict[str, Any], state: str, generation: int, registered: float) -> None:
        loc = info["location"]
        self.db.execute(
            "INSERT INTO sites VALUES (?,?,?,?,?,?) ON CONFLICT(name) DO UPDATE SET "
            "city=excluded.city, country=excluded.country, region=excluded.region, lat=excluded.lat, lon=excluded.lon",
            (info["site"], loc["city"], loc["country"], loc["region"], loc["lat"], loc["lon"]),
        )
        self.db.execute(
            "INSERT INTO nodes (name, site, info, state, generation, registered) VALUES (?,?,?,?,?,?) ON CONFLICT(name) DO UPDATE SET "
            "site=excluded.site, info=excluded.info, state=excluded.state, generation=excluded.generation",
            (info["name"], info["site"], json.dumps(info), state, generation, registered),
        )

    def set_node_admin(self, name: str, admin: str) -> None:
        self.db.execute("UPDATE nodes SET admin=? WHERE name=?", (admin, name))

    def delete_node(self, name: str) -> None:
        # Rows a failed change in parts left behind may still refer to it. A removal is a
        # change: it waits for one in parts to end, so whatever is unfinished now is left over.
        self.drop_unfinished()
        self.db.execute("DELETE FROM nodes WHERE name=?", (name,))

    # ---- moves and events ---------------------------------------------------------------

    def move_sliver(self, sliver: str, node: str, moves: int) -> None:
        """The sliver now runs on ``node`` (a move completed, or its old node was lost)."""
        self.db.execute("UPDATE allocations SET node=? WHERE sliver=?", (node, sliver))
        self.db.execute("UPDATE slivers SET moves=? WHERE id=?", (moves, sliver))
        self.db.execute("DELETE FROM moves WHERE sliver=?", (sliver,))

    def begin_move(self, sliver: str, to_node: str, started: float, why: str, plan: str = "") -> None:
        self.db.execute("INSERT OR REPLACE INTO moves (sliver, to_node, started, why, plan) VALUES (?,?,?,?,?)", (sliver, to_node, started, why, plan))

    def end_move(self, sliver: str) -> None:
        self.db.execute("DELETE FROM moves WHERE sliver=?", (sliver,))

    def moves(self) -> list[tuple[str, str, float, str, str]]:
        return [tuple(r) for r in self.db.execute("SELECT sliver, to_node, started, why, plan FROM moves")]  # type: ignore[misc]

    def add_events(self, rows: Iterable[tuple[str, str | None, str | None, float, str, str]]) -> None:
        self.db.executemany("INSERT INTO events (slice, sliver, node, ts, event, detail) VALUES (?,?,?,?,?,?)", rows)

    def events(self, slice_name: str, limit: int) -> list[tuple[str | None, str | None, float, str, str]]:
        q = "SELECT sliver, node, ts, event, detail FROM (SELECT * FROM events WHERE slice=? ORDER BY id DESC LIMIT ?) ORDER BY id"
        return [tuple(r) for r in self.db.execute(q, (slice_name, limit))]  # type: ignore[misc]

    def drop_events(self, slice_name: str) -> None:
        self.db.execute("DELETE FROM events WHERE slice=?", (slice_name,))

    def gave_generations(self, generations: Iterable[int]) -> None:
        """Desired-set generations just given to nodes, written in the change's transaction:
        the store keeps only the largest ever given, in one row. A restarted controller gives
        every node the next one (``generation_floor``), so no agent can hold a generation
        the controller would give again for other slivers. One row, not one per node: a
        slice on 10,000 nodes wrote 10,000 rows here, 17-22 ms of the step that must be whole."""
        top = max(generations, default=None)
        if top is not None:
            self.db.execute(
                "INSERT INTO meta VALUES ('generations', ?) ON CONFLICT(key) DO UPDATE SET value = max(CAST(value AS INTEGER), CAST(excluded.value AS INTEGER))",
                (str(top),),
            )

    def generation_floor(self) -> int:
        """The largest desired-set generation any node was given (``gave_generations``); a
        file written before that row counts its per-node generations instead."""
        q = (
            "SELECT max((SELECT coalesce(max(CAST(value AS INTEGER)), 0) FROM meta WHERE key='generations'), "
            "(SELECT coalesce(max(generation), 0) FROM generations), (SELECT coalesce(max(generation), 0) FROM nodes))"
        )
        return int(self.db.execute(q).fetchone()[0])

    def insert_slice(self, row: SliceRow, slivers: Iterable[SliverRow]) -> None:
        self.drop_unfinished(row.name)  # what a failed write in parts could not remove
        self.db.execute(
            "INSERT INTO slices VALUES (?,?,?,?,?,?,?,?)",
            (row.name, row.owner, json.dumps(row.spec), row.state, row.created, row.expires, row.request_id, row.site),
        )
        self.insert_slivers(slivers)

    def insert_slivers(self, slivers: Iterable[SliverRow]) -> None:
        rows = list(slivers)
        self.db.executemany(
            "INSERT INTO slivers (id, slice, request, state, reason, spec, moves) VALUES (?,?,?,?,?,?,?)",
            [(s.id, s.slice, s.request, s.state, s.reason, s.spec if isinstance(s.spec, str) else json.dumps(s.spec), s.moves) for s in rows],
        )
        self.db.executemany(
            "INSERT INTO allocations VALUES (?,?,?,?,?)", [(s.id, s.node, s.cpu, s.memory, s.disk) for s in rows]
        )

    def delete_slice(self, name: str) -> None:
        self.db.execute("DELETE FROM slices WHERE name=?", (name,))
        self.db.execute("DELETE FROM events WHERE slice=?", (name,))  # a later slice may take the name

    def drop_unfinished(self, name: str | None = None) -> list[str]:
        """Slices (all, or the one named) that a change in parts left unfinished: a create
        not ended, or a delete whose rows were not all removed. Neither exists any more."""
        if name is None:
            names = [r[0] for r in self.db.execute("SELECT name FROM slices WHERE state IN (?,?)", UNFINISHED)]
        else:  # by its key: every create asks
            names = [r[0] for r in self.db.execute("SELECT name FROM slices WHERE name=? AND state IN (?,?)", (name, *UNFINISHED))]
        for n in names:
            self.delete_slice(n)
        return names

    def write_in_parts(self, row: SliceRow, slivers: list[SliverRow], part: int = PART_ROWS) -> Generator[None, None, None]:
        """A big slice's rows, ``part`` slivers per transaction, yielding after each: the slice
        is stored as ``writing`` until its creator's own transaction sets its state. Whoever
        gives up before that removes it (``drop_unfinished``); a crash leaves it for the next
        start to remove."""
        for k in range(0, len(slivers), part):
            with self.transaction(part=True):
                if k == 0:
                    self.insert_slice(replace(row, state=WRITING), slivers[:part])
                else:
                    self.insert_slivers(slivers[k : k + part])
            yield

    def delete_in_parts(self, name: str, part: int = PART_ROWS) -> Generator[None, None, None]:
        """The rows of a slice already marked ``deleting``, ``part`` slivers per transaction
        (cascading to their allocations and moves), yielding after each; the slice's own row
        and events last."""
        mine = "SELECT 1 FROM slices WHERE name=? AND state=?"  # never a newer slice of the same name
        while True:
            with self.transaction(part=True):
                q = f"DELETE FROM slivers WHERE rowid IN (SELECT rowid FROM slivers WHERE slice=? AND EXISTS ({mine}) LIMIT ?)"
                n = self.db.execute(q, (name, name, DELETING, part)).rowcount
                if n < part:
                    if self.db.execute("DELETE FROM slices WHERE name=? AND state=?", (name, DELETING)).rowcount:
                        self.db.execute("DELETE FROM events WHERE slice=?", (name,))
                    return
            yield

    def release_slice(self, name: str, state: str) -> None:
        """Keep the slice's record (e.g. ``expired``) but free its slivers and allocations."""
        self.db.execute("DELETE FROM slivers WHERE slice=?", (name,))
        self.db.execute("UPDATE slices SET state=? WHERE name=?", (state, name))

    def set_slice(self, name: str, *, state: str | None = None, expires: float | None = None) -> None:
        if state is not None:
            self.db.execute("UPDATE slices SET state=? WHERE name=?", (state, name))
        if expires is not None:
            self.db.execute("UPDATE slices SET expires=? WHERE name=?", (expires, name))

    def set_sliver_states(self, rows: Iterable[tuple[str, str, str | None]]) -> None:
        self.db.executemany("UPDATE slivers SET state=?, reason=? WHERE id=?", [(s, r, i) for i, s, r in rows])

    def quarantine(self, kind: str, name: str, data: object, reason: str) -> None:
        """Move a record the controller cannot serve aside, with why (a slice takes its
        slivers and allocations with it; a node keeps its row until nothing refers to it)."""
        self.db.execute("INSERT INTO quarantine (kind, name, data, reason, ts) VALUES (?,?,?,?,?)", (kind, name, json.dumps(data, default=str), reason, time.time()))
        if kind == "slice":
            self.db.execute("DELETE FROM slices WHERE name=?", (name,))
        elif kind == "node":
            self.db.execute("DELETE FROM nodes WHERE name=? AND NOT EXISTS (SELECT 1 FROM allocations WHERE node=?)", (name, name))

    def quarantined(self) -> list[tuple[str, str, str, float]]:
        return [tuple(r) for r in self.db.execute("SELECT kind, name, reason, ts FROM quarantine ORDER BY id")]  # type: ignore[misc]

    # ---- reads (start-up) ----------------------------------------------------------------

    def slices_on(self, node: str) -> list[str]:
        q = "SELECT DISTINCT s.slice FROM slivers s JOIN allocations a ON a.sliver = s.id WHERE a.node = ?"
        return [r[0] for r in self.db.execute(q, (node,))]

    def slice_doc(self, name: str) -> object:
        row = self.db.execute("SELECT spec FROM slices WHERE name=?", (name,)).fetchone()
        return _json(row[0]) if row else None

    def nodes(self) -> list[tuple[Any, str, float, str]]:
        """Every node: (info, state, registered, admin). Its generation is ``generation_floor``'s."""
        return [(_json(i), s, r, a) for i, s, r, a in self.db.execute("SELECT info, state, registered, admin FROM nodes")]

    def slices(self) -> list[SliceRow]:
        """Every slice but those a change in parts left unfinished (they do not exist)."""
        q = "SELECT name, owner, spec, state, created, expires, request_id, site FROM slices WHERE state NOT IN (?,?) ORDER BY created, name"
        return [SliceRow(n, o, _json(sp), st, c, e, rid, site) for n, o, sp, st, c, e, rid, site in self.db.execute(q, UNFINISHED)]

    def slivers(self) -> list[SliverRow]:
        q = (
            "SELECT s.id, s.slice, s.request, s.state, s.reason, s.spec, a.node, a.cpu, a.memory, a.disk, s.moves "
            "FROM slivers s JOIN allocations a ON a.sliver = s.id JOIN slices p ON p.name = s.slice WHERE p.state NOT IN (?,?) ORDER BY s.slice, s.rowid"
        )
        return [SliverRow(i, sl, rq, st, rs, _json(sp), n, c, m, d, mv) for i, sl, rq, st, rs, sp, n, c, m, d, mv in self.db.execute(q, UNFINISHED)]


def _json(text: object) -> Any:
    """A stored JSON column; None for one that does not parse (the caller quarantines it)."""
    try:
        return json.loads(text) if isinstance(text, (str, bytes)) else None
    except ValueError:
        return None
