"""Replies to requests that change state, so a retried request is answered, never applied twice,
also across a controller restart.

A client retries with the same request id (``slices/client.py``). The newest replies are kept
in memory; every reply is also written to the store, and the change itself commits a marker
with what it did (``Store.applying``). So a retry that reaches a restarted controller finds
either the reply it missed, or, when the controller died between committing the change and
answering, the marker: the server then answers from what the change left (``replay``) instead
of doing it again.
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


@dataclass(frozen=True)
class Applied:
    """The request was applied before a crash, and never answered."""

    summary: dict[str, Any]


class Replies:
    def __init__(self, store: Store, keep: int) -> None:
        self.store = store
        self.keep = keep
        self.recent: OrderedDict[Key, bytes] = OrderedDict()

    def known(self, key: Key) -> bytes | Applied | None:
        """The reply already sent for ``key``, ``Applied`` if only its change is on record, or
        None for a request never applied."""
        if key in self.recent:
            return self.recent[key]
        stored = self.store.reply_to(key)
        if stored is None:
            return None
        payload, summary = stored
        return payload if payload is not None else Applied(summary or {})

    def save(self, key: Key, payload: bytes, *, applied: bool) -> None:
        """Remember a reply; write it to the store only if the request was ``applied`` (a
        refusal changed nothing, and a stored refusal would let anyone with a key make the
        controller write to disk at the rate it can send refused requests)."""
        self.recent[key] = payload
        while len(self.recent) > self.keep:
            self.recent.popitem(last=False)
        if not applied:
            return
        try:
            self.store.save_reply(key, payload, self.keep)
        except StoreError as exc:  # a full disk: the change's own marker still guards a retry
            log.warning("reply to request %s not stored: %s", key[1], exc.reason)
