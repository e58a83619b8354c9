"""Opening the controller's database safely: a corrupt file, or an empty one where a cluster
used to be, is refused with its path and what to do, never started as an empty cluster.

Every database holds its cluster's identity (a random id made at creation, in ``meta``), and
a marker file beside it (``<db>.cluster``) remembers it. A database that is new while its
marker names a cluster means the file was lost or truncated: agents would keep running
slivers nobody knows of. The operator restores the file, or starts a new cluster on purpose
(``--new-cluster``); agents then notice the new identity and keep their slivers as orphans
until an operator says what to do with them.
"""

from __future__ import annotations

import secrets
import sqlite3
from pathlib import Path

from slices.errors import SliceMeshError


class StoreError(SliceMeshError):
    """The database cannot be used as it is; the reason names the file and what to do."""

    code = "unavailable"


def marker_of(path: str) -> Path:
    return Path(path + ".cluster")


def connect(path: str) -> sqlite3.Connection:
    """Open and check the file: refuse what is not an intact SQLite database."""
    if path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    try:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        (verdict,) = db.execute("PRAGMA quick_check").fetchone()
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path} is not a usable slicemesh database ({exc}): restore it from a backup, or move it away and start the controller with --new-cluster") from None
    if verdict != "ok":
        db.close()
        raise StoreError(f"{path} is damaged (SQLite quick_check: {str(verdict)[:200]}): restore it from a backup, or move it away and start with --new-cluster")
    return db


def cluster_identity(db: sqlite3.Connection, path: str, *, created: bool, new_cluster: bool) -> str:
    """The cluster's id, made with a new database; refuses a new database where a cluster was."""
    marker = marker_of(path)
    known = marker.read_text().strip() if path != ":memory:" and marker.exists() else None
    row = db.execute("SELECT value FROM meta WHERE key='cluster'").fetchone()
    if row is not None:
        if known is not None and known != row[0] and not new_cluster:
            raise StoreError(f"{path} belongs to cluster {row[0]}, but {marker} says this controller served cluster {known}: is this the right file?")
        ident = str(row[0])
    else:
        if created and known is not None and not new_cluster:
            raise StoreError(
                f"{path} is empty, but this controller served cluster {known} from it (see {marker}): "
                "restore the database from a backup, or start with --new-cluster to begin an empty cluster "
                "(its agents then keep their running slivers as orphans until an operator decides)"
            )
        ident = secrets.token_hex(8)
        db.execute("INSERT OR REPLACE INTO meta VALUES ('cluster', ?)", (ident,))
    if path != ":memory:" and known != ident:
        marker.write_text(ident + "\n")
    return ident
