"""SQLite tables of trust: principals (agent and user keys), enrolment tokens, site limits and
the audit log. Same database and transactions as ``store.py``; nothing here knows sockets.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from controller.store import Store

SCHEMA = """
CREATE TABLE IF NOT EXISTS principals (
    key TEXT PRIMARY KEY,          -- z85 CURVE public key
    kind TEXT NOT NULL,            -- agent | user
    name TEXT NOT NULL,            -- node name or user name
    state TEXT NOT NULL,           -- pending | accepted | rejected | revoked
    role TEXT,                     -- users: admin | pi | user
    site TEXT,                     -- users: the site they belong to
    address TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS principals_name ON principals(kind, name);
CREATE TABLE IF NOT EXISTS tokens (
    hash TEXT PRIMARY KEY,         -- sha256 of the token: the token itself is never stored
    node TEXT,
    expires REAL NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS site_policies (
    name TEXT PRIMARY KEY,
    max_slices INTEGER NOT NULL, max_slivers INTEGER NOT NULL, max_cpu REAL NOT NULL,
    max_memory INTEGER NOT NULL, max_nodes_per_slice INTEGER NOT NULL, created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL, who TEXT NOT NULL, key TEXT NOT NULL,
    action TEXT NOT NULL, target TEXT NOT NULL, detail TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class Principal:
    """Who a key belongs to and what state it is in."""

    key: str
    kind: str  # agent | user
    name: str
    state: str  # pending | accepted | rejected | revoked
    role: str | None = None
    site: str | None = None
    address: str = ""
    created: float = 0.0
    updated: float = 0.0

    @property
    def fingerprint(self) -> str:
        return self.key[:12]

    @property
    def who(self) -> str:
        return f"{self.kind} {self.name}"


@dataclass(frozen=True)
class Limits:
    name: str
    max_slices: int = 0
    max_slivers: int = 0
    max_cpu: float = 0.0
    max_memory: int = 0
    max_nodes_per_slice: int = 0


class TrustStore:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.db = store.db
        self.db.executescript(SCHEMA)

    # ---- principals ----------------------------------------------------------------------

    def principals(self) -> list[Principal]:
        rows = self.db.execute("SELECT key, kind, name, state, role, site, address, created, updated FROM principals")
        return [Principal(*r) for r in rows]

    def put_principal(self, p: Principal) -> None:
        self.db.execute(
            "INSERT INTO principals VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT(key) DO UPDATE SET "
            "kind=excluded.kind, name=excluded.name, state=excluded.state, role=excluded.role, "
            "site=excluded.site, address=excluded.address, updated=excluded.updated",
            (p.key, p.kind, p.name, p.state, p.role, p.site, p.address, p.created, p.updated),
        )

    def put_principals(self, ps: Iterable[Principal]) -> None:
        for p in ps:
            self.put_principal(p)

    def delete_principal(self, key: str) -> None:
        self.db.execute("DELETE FROM principals WHERE key=?", (key,))

    # ---- tokens --------------------------------------------------------------------------

    def add_token(self, digest: str, node: str | None, expires: float, created: float) -> None:
        self.db.execute("INSERT INTO tokens VALUES (?,?,?,?)", (digest, node, expires, created))

    def token(self, digest: str) -> tuple[str | None, float] | None:
        row = self.db.execute("SELECT node, expires FROM tokens WHERE hash=?", (digest,)).fetchone()
        return (row[0], row[1]) if row else None

    def drop_token(self, digest: str) -> None:
        self.db.execute("DELETE FROM tokens WHERE hash=?", (digest,))

    def drop_expired_tokens(self, now: float) -> None:
        self.db.execute("DELETE FROM tokens WHERE expires < ?", (now,))

    # ---- site limits ---------------------------------------------------------------------

    def limits(self) -> list[Limits]:
        rows = self.db.execute("SELECT name, max_slices, max_slivers, max_cpu, max_memory, max_nodes_per_slice FROM site_policies")
        return [Limits(*r) for r in rows]

    def put_limits(self, lim: Limits, created: float) -> None:
        self.db.execute(
            "INSERT INTO site_policies VALUES (?,?,?,?,?,?,?) ON CONFLICT(name) DO UPDATE SET "
            "max_slices=excluded.max_slices, max_slivers=excluded.max_slivers, max_cpu=excluded.max_cpu, "
            "max_memory=excluded.max_memory, max_nodes_per_slice=excluded.max_nodes_per_slice",
            (lim.name, lim.max_slices, lim.max_slivers, lim.max_cpu, lim.max_memory, lim.max_nodes_per_slice, created),
        )

    def delete_limits(self, name: str) -> None:
        self.db.execute("DELETE FROM site_policies WHERE name=?", (name,))

    # ---- audit ---------------------------------------------------------------------------

    def audit(self, ts: float, who: str, key: str, action: str, target: str, detail: str) -> None:
        self.db.execute("INSERT INTO audit (ts, who, key, action, target, detail) VALUES (?,?,?,?,?,?)", (ts, who, key, action, target, detail))

    def audit_entries(self, limit: int, before: int | None) -> list[tuple[int, float, str, str, str, str, str]]:
        q = "SELECT id, ts, who, key, action, target, detail FROM audit"
        args: tuple[int, ...] = ()
        if before is not None:
            q += " WHERE id < ?"
            args = (before,)
        return list(self.db.execute(q + " ORDER BY id DESC LIMIT ?", (*args, limit)))
