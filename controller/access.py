"""Who may do what: pure rules over principals, no I/O.

Roles as PlanetLab's PLC had them: a ``user`` creates slices for their site and manages their
own; a ``pi`` manages every slice of their site; an ``admin`` manages everything (and users,
sites, keys). Everyone authenticated sees nodes and sites (the testbed is public to its
members); slices, their slivers and usage are visible to the owner's site, or to admins.
Agents speak only the agent messages, and only for the node their key was accepted for.
"""

from __future__ import annotations

from controller.truststore import Principal
from slices.protocol import Message


def sender_refusal(cls: type[Message], p: Principal) -> str | None:
    """Why ``p`` may not send a ``cls`` at all, or None."""
    if cls.SENDER in ("any",) or p.kind == cls.SENDER:
        return None
    if cls.SENDER == "controller":
        return f"{cls.TYPE} is sent by the controller, not to it"
    return f"{p.who} may not send {cls.TYPE}: it is a message for {cls.SENDER}s"


def is_admin(p: Principal) -> bool:
    return p.kind == "user" and p.role == "admin"


def can_see(p: Principal, owner: str | None, site: str | None) -> bool:
    return is_admin(p) or (p.kind == "user" and site is not None and site == p.site)


def can_manage(p: Principal, owner: str | None, site: str | None) -> bool:
    if is_admin(p):
        return True
    if p.kind != "user" or site is None or site != p.site:
        return False
    return p.role == "pi" or owner == p.name


def manage_refusal(p: Principal, what: str, owner: str | None, site: str | None) -> str | None:
    if can_manage(p, owner, site):
        return None
    if p.role == "user" and site == p.site:
        return f"{what} belongs to {owner or 'nobody'}; a user manages only their own slices (a PI of site {site} manages all of them)"
    return f"{what} belongs to site {site or '-'}; {p.who} ({p.role}) of site {p.site or '-'} may not manage it"
