"""The spec's policies: ``on_node_failure``, ``restart`` and ``network``, parsed with field paths.

    on_node_failure: replace          # or keep: wait for the node to come back
    restart: on-failure               # never | on-failure | always, or a mapping:
    restart: {policy: on-failure, attempts: 5, backoff: 1s, max_backoff: 1m, moves: 2}
    network: {open_to_slices: true}   # default false: no other slice's slivers reach this one's
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from slices.checker import Checker, kind
from slices.model import CODE_DELIVERY, RESTART_POLICIES, CodeRef, RestartPolicy

NODE_FAILURE = ("replace", "keep")


def parse_on_node_failure(c: Checker, value: object) -> str:
    return c.choice("on_node_failure", value, NODE_FAILURE) or "replace"


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def _seconds(c: Checker, path: str, value: object, low: float, high: float) -> float | None:
    """Seconds from a number or a duration with its unit: 500ms, 2s, 1.5m, 1h."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return c.number(path, value, low, high)
    match = _DURATION.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None:
        c.fail(path, f"must be seconds or a duration such as 500ms, 5s, 1m, 1h; got {kind(value) if not isinstance(value, str) else repr(value[:40])}")
        return None
    return c.number(path, float(match[1]) * _SECONDS[match[2]], low, high)


def parse_restart(c: Checker, value: object) -> RestartPolicy:
    if isinstance(value, str):
        choice = c.choice("restart", value, RESTART_POLICIES)
        return RestartPolicy(policy=choice) if choice else RestartPolicy()
    if not isinstance(value, Mapping):
        c.fail("restart", f"must be one of {', '.join(RESTART_POLICIES)} or a mapping, got {kind(value)}")
        return RestartPolicy()
    doc = c.mapping(value, "restart", ("policy", "attempts", "backoff", "max_backoff", "moves"))
    base = RestartPolicy()
    policy = c.choice("restart.policy", doc["policy"], RESTART_POLICIES) if "policy" in doc else base.policy
    attempts = c.integer("restart.attempts", doc["attempts"], 0, 1000) if "attempts" in doc else base.attempts
    moves = c.integer("restart.moves", doc["moves"], 0, 100) if "moves" in doc else base.moves
    backoff = _seconds(c, "restart.backoff", doc["backoff"], 0.1, 3600) if "backoff" in doc else base.backoff
    max_backoff = _seconds(c, "restart.max_backoff", doc["max_backoff"], 0.1, 86400) if "max_backoff" in doc else base.max_backoff
    if None in (policy, attempts, moves, backoff, max_backoff):
        return base
    assert policy is not None and attempts is not None and moves is not None and backoff is not None and max_backoff is not None
    if max_backoff < backoff:
        c.fail("restart.max_backoff", f"must be at least restart.backoff ({backoff:g} s)")
    return RestartPolicy(policy=policy, attempts=attempts, backoff=backoff, max_backoff=max_backoff, moves=moves)


def parse_network(c: Checker, value: object) -> bool:
    """``network: {open_to_slices: BOOL}``: whether the slice's slivers may exchange traffic
    with the slivers of other slices that are open too (docs/networking.md)."""
    doc = c.mapping(value, "network", ("open_to_slices",))
    flag = doc.get("open_to_slices", False)
    if not isinstance(flag, bool):
        c.fail("network.open_to_slices", f"must be true or false, got {kind(flag)}")
        return False
    return flag


DIGEST_RE = re.compile(r"[0-9a-f]{64}")


def parse_code(c: Checker, value: object) -> tuple[CodeRef | None, str | None]:
    """``code: {path: DIR_OR_TARBALL, delivery: pull | push}`` as a researcher writes it (the
    CLI packs and uploads it), or ``code: {digest, size, delivery}`` once uploaded: the bundle,
    or the path still to upload."""
    doc = c.mapping(value, "code", ("path", "digest", "size", "delivery"))
    delivery = c.choice("code.delivery", doc.get("delivery", "pull"), CODE_DELIVERY) or "pull"
    if ("path" in doc) == ("digest" in doc):
        c.fail("code", "give path (a directory or tarball; slicemesh create uploads it) or digest and size, one of them")
        return None, None
    if "path" in doc:
        path = doc["path"]
        if not isinstance(path, str) or not path or "\x00" in path or len(path) > 4096:
            c.fail("code.path", "must be a path to a directory or a tarball")
            return None, None
        return None, path
    digest = c.string("code.digest", doc["digest"], DIGEST_RE, "SHA-256 digest (64 hex digits)")
    if "size" not in doc:
        c.fail("code.size", "is required with code.digest")
        return None, None
    size = c.integer("code.size", doc["size"], 0, 1 << 34)
    if digest is None or size is None:
        return None, None
    return CodeRef(digest=digest, size=size, delivery=delivery), None
