"""Replies to requests that change state, so a retried request is answered, never applied twice,
also across a controller restart.

A client retries with the same request id (``slices/client.py``). The newest replies are kept
in memory; every reply is also written to the store, those of a loop turn together in one
transaction at its end (``flush``: a commit per reply was a tenth of the controller's CPU for
a small create), and the change itself commits a marker with what it did
(``Store.applying``). So a retry that reaches a restarted controller finds either the reply it
missed, or, when the controller died between committing the change and writing its reply, the
marker: the server then answers from what the change left (``replay``) instead of doing it
again.

A reply over ``STORED_UP_TO`` bytes (the view of a create of thousands of slivers: 3 MB at
10,000) is not written: writing it held the loop 5-33 ms here, and its retry after a restart
is answered from the marker, as one that came between the change and its answer is. The
replies kept in memory are bounded in bytes too (``RECENT_BYTES``), not only in number.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from controller.store import Store
from controller.storefile import StoreError

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (the caller's key, its request id)
STORED_UP_TO = 256 * 1024  # bytes of a reply written to the store at most
RECENT_BYTES = 64 * 1024 * 1024  # bytes of replies kept in memory at most (the newest)


@dataclass(frozen=True)
class Applied:
    """The request was applied before a crash, and never answered."""

    summary: dict[str, Any]


class Replies:
    def __init__(self, store: Store, keep: int, *, recent_bytes: int = RECENT_BYTES) -> None:
        self.store = store
        self.keep = keep
        self.recent_bytes = recent_bytes
        self.recent: OrderedDict[Key, bytes] = OrderedDict()
        self._bytes = 0  # of the replies in ``recent``
        self.pending: dict[Key, bytes] = {}  # saved, not yet written (``flush``)

    def known(self, key: Key) -> bytes | Applied | None:
        """The reply already sent for ``key``, ``Applied`` if only its change is on record, or
        None for a request never applied."""
        if key in self.recent:
            return self.recent[key]
        if key in self.pending:
            return self.pending[key]
        stored = self.store.reply_to(key)
        if stored is None:
            return None
        payload, summary = stored
        return payload if payload is not None else Applied(summary or {})

    def save(self, key: Key, payload: bytes, *, applied: bool) -> None:
        """Remember a reply; write it to the store only if the request was ``applied`` (a
        refusal changed nothing, and a stored refusal would let anyone with a key make the
        controller write to disk at the rate it can send refused requests)."""
        old = self.recent.pop(key, None)
        self._bytes += len(payload) - (len(old) if old is not None else 0)
        self.recent[key] = payload
        while len(self.recent) > self.keep or (self._bytes > self.recent_bytes and len(self.recent) > 1):
            self._bytes -= len(self.recent.popitem(last=False)[1])
        if not applied or len(payload) > STORED_UP_TO:
            return  # a refusal changed nothing; a big reply's retry is answered from its change's marker
        self.pending[key] = payload

    def flush(self) -> None:
        """Write the replies saved since the last flush, in one transaction. A crash before
        it loses none of their changes' markers: a retry is answered from the marker, as one
        that came between a change and its answer always was."""
        if not self.pending:
            return
        pending, self.pending = self.pending, {}
        try:
            self.store.save_replies(list(pending.items()), self.keep)
        except StoreError as exc:  # a full disk: the changes' own markers still guard a retry
            log.warning("%d replies not stored (e.g. to request %s): %s", len(pending), next(iter(pending))[1], exc.reason)
