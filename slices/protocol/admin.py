"""Trust: keys (agent enrolment as Salt does it), users and sites with roles and quotas, and the
audit log. Every request here but ``whoami`` (``ping``) is for admins.

Agents enrol in one of three ways: an operator pre-seeds the node's public key
(``trust_keys``, ``slicemesh keys add``); the agent presents a one-time token
(``make_token``, ``slicemesh keys token``); or its key waits as ``pending`` until an operator
accepts it (``accept_key``, ``slicemesh keys accept NODE``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from slices.model import NODE_NAME, SITE_NAME, Role
from slices.protocol.base import Message, message
from slices.wire import fld

KEY = r"[0-9A-Za-z.\-:+=^!/*?&<>()\[\]{}@%$#]{40}"  # z85, 32 bytes
USER_NAME = r"[a-z_][a-z0-9_.-]{0,31}"
PrincipalKind = Literal["agent", "user"]
MAX_TRUST = 20_000


@dataclass(frozen=True, kw_only=True)
class KeyView:
    name: str = fld(max_len=128)
    kind: str = fld(max_len=16)
    state: str = fld(max_len=16)  # pending | accepted | rejected | revoked
    fingerprint: str = fld(max_len=64)  # the first characters of the public key
    role: str | None = fld(None, max_len=16)
    site: str | None = fld(None, max_len=64)
    address: str = fld("", kind="text", max_len=128)
    created: float = fld(0.0, lo=0)
    updated: float = fld(0.0, lo=0)


@dataclass(frozen=True, kw_only=True)
class KeyList:
    keys: list[KeyView] = fld(factory=list, max_items=1_000_000)


@dataclass(frozen=True, kw_only=True)
class KeyChanged:
    name: str = fld(max_len=128)
    kind: str = fld(max_len=16)
    state: str = fld(max_len=16)
    count: int = fld(1, lo=0)


@dataclass(frozen=True, kw_only=True)
class Token:
    token: str = fld(max_len=64)
    node: str | None = fld(None, pattern=NODE_NAME)
    expires: float = fld(lo=0)


@dataclass(frozen=True, kw_only=True)
class UserView:
    name: str = fld(pattern=USER_NAME)
    site: str = fld(pattern=SITE_NAME)
    role: str = fld(max_len=16)
    state: str = fld(max_len=16)
    fingerprint: str = fld(max_len=64)
    created: float = fld(0.0, lo=0)


@dataclass(frozen=True, kw_only=True)
class UserList:
    users: list[UserView] = fld(factory=list, max_items=1_000_000)


@dataclass(frozen=True, kw_only=True)
class SitePolicy:
    """A site's limits; 0 means no limit. Usage is what its slices hold now."""

    name: str = fld(pattern=SITE_NAME)
    max_slices: int = fld(0, lo=0, hi=1_000_000)
    max_slivers: int = fld(0, lo=0, hi=10_000_000)
    max_cpu: float = fld(0.0, lo=0, hi=1e9)
    max_memory: int = fld(0, lo=0, hi=1 << 62)
    max_nodes_per_slice: int = fld(0, lo=0, hi=1_000_000)
    used_slices: int = fld(0, lo=0)
    used_slivers: int = fld(0, lo=0)
    used_cpu: float = fld(0.0, lo=0)
    used_memory: int = fld(0, lo=0)
    users: int = fld(0, lo=0)


@dataclass(frozen=True, kw_only=True)
class PolicyList:
    sites: list[SitePolicy] = fld(factory=list, max_items=1_000_000)


@dataclass(frozen=True, kw_only=True)
class AuditEntry:
    id: int = fld(lo=0)
    ts: float = fld(lo=0)
    who: str = fld(max_len=128)
    key: str = fld(max_len=64)  # fingerprint of the key that did it ("" for the controller itself)
    action: str = fld(max_len=64)
    target: str = fld(kind="text", max_len=256)
    detail: str = fld("", kind="text", max_len=1024)


@dataclass(frozen=True, kw_only=True)
class AuditList:
    entries: list[AuditEntry] = fld(factory=list, max_items=100_000)
    next: int | None = fld(None, lo=0)  # pass as ``before`` for older entries


# ---- keys ------------------------------------------------------------------------------------


@message
@dataclass(frozen=True)
class ListKeys(Message):
    TYPE = "list_keys"
    REPLY = KeyList


@message
@dataclass(frozen=True)
class AcceptKey(Message):
    """Accept the pending key of agent ``name``."""

    TYPE = "accept_key"
    REPLY = KeyChanged
    name: str = fld(pattern=NODE_NAME)


@message
@dataclass(frozen=True)
class RejectKey(Message):
    """Refuse the pending key of agent ``name`` (it is remembered and refused from then on)."""

    TYPE = "reject_key"
    REPLY = KeyChanged
    name: str = fld(pattern=NODE_NAME)


@message
@dataclass(frozen=True)
class RevokeKey(Message):
    """Cut off an accepted agent or user key at once."""

    TYPE = "revoke_key"
    REPLY = KeyChanged
    name: str = fld(max_len=128)
    kind: PrincipalKind = fld("agent")


@message
@dataclass(frozen=True)
class TrustKeys(Message):
    """Pre-seed agents' public keys: node name -> key (``slicemesh keys add``, simulations)."""

    TYPE = "trust_keys"
    REPLY = KeyChanged
    agents: dict[str, str] = fld(factory=dict, pattern=KEY, key_pattern=NODE_NAME, max_items=MAX_TRUST)


@message
@dataclass(frozen=True)
class MakeToken(Message):
    """A one-time enrolment token, optionally only for node ``node``."""

    TYPE = "make_token"
    REPLY = Token
    node: str | None = fld(None, pattern=NODE_NAME)
    ttl: float = fld(3600.0, lo=1.0, hi=30 * 86400.0)


# ---- users and sites -------------------------------------------------------------------------


@message
@dataclass(frozen=True, kw_only=True)
class AddUser(Message):
    TYPE = "add_user"
    REPLY = UserView
    name: str = fld(pattern=USER_NAME)
    site: str = fld(pattern=SITE_NAME)
    role: Role = fld("user")
    key: str = fld(pattern=KEY)


@message
@dataclass(frozen=True)
class RemoveUser(Message):
    TYPE = "remove_user"
    REPLY = KeyChanged
    name: str = fld(pattern=USER_NAME)


@message
@dataclass(frozen=True)
class ListUsers(Message):
    TYPE = "list_users"
    REPLY = UserList


@message
@dataclass(frozen=True)
class SetSite(Message):
    """Create a site or change its limits (fields left out keep their value; 0 = no limit)."""

    TYPE = "set_site"
    REPLY = SitePolicy
    name: str = fld(pattern=SITE_NAME)
    max_slices: int | None = fld(None, lo=0, hi=1_000_000)
    max_slivers: int | None = fld(None, lo=0, hi=10_000_000)
    max_cpu: float | None = fld(None, lo=0, hi=1e9)
    max_memory: int | None = fld(None, lo=0, hi=1 << 62)
    max_nodes_per_slice: int | None = fld(None, lo=0, hi=1_000_000)


@message
@dataclass(frozen=True)
class RemoveSite(Message):
    TYPE = "remove_site"
    REPLY = KeyChanged
    name: str = fld(pattern=SITE_NAME)


@message
@dataclass(frozen=True)
class ListPolicies(Message):
    """Every site's limits and what its slices use now."""

    TYPE = "list_policies"
    REPLY = PolicyList


@message
@dataclass(frozen=True)
class ListAudit(Message):
    TYPE = "list_audit"
    REPLY = AuditList
    limit: int = fld(100, lo=1, hi=100_000)
    before: int | None = fld(None, lo=0)
