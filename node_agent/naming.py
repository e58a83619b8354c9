"""Names derived from a sliver, the same whichever backend runs it (pure).

``sliver_key``: what names a sliver's host objects (cgroup leaf, state directory, runc id,
TAP and veth hashes); ``hostname_for``: the hostname its slice's slivers see, in a container's
UTS namespace and in a VM's guest alike.
"""

from __future__ import annotations

import hashlib
import re

_SAFE_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")


def sliver_key(sliver_id: str) -> str:
    """A name safe for runc ids, cgroup and file names; the id itself when it already is."""
    if _SAFE_ID.match(sliver_id):
        return sliver_id
    return "h" + hashlib.sha1(sliver_id.encode()).hexdigest()[:20]


def hostname_for(slice_name: str) -> str:
    """The slice name as a hostname label (lowercase letters, digits, '-'; at most 63)."""
    name = re.sub(r"[^a-z0-9-]+", "-", slice_name.lower()).strip("-")
    return name[:63] or "sliver"
