"""The isolation kinds a slice can ask for, written down once (spec validation, node offers,
the agent's backend table all read them from here)."""

from __future__ import annotations

CONTAINER = "container"
VM = "vm"
ISOLATIONS = (CONTAINER, VM)
