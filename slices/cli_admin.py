"""The ``slicemesh`` commands of trust: ``login``, ``keygen``, ``whoami``, ``keys``, ``users``,
``sites set|remove|limits`` and ``audit``. Each command is the request it sends plus how its
reply is printed; the rules themselves live in the controller."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from slices import identity, render
from slices import protocol as proto  # its keys' and users' messages load when first used
from slices.client import Client
from slices.errors import SliceMeshError
from slices.protocol import (
    ROLES,
    NodeAdmin,
    Orphans,
    Ping,
)
from slices.transport import TransportError, new_keypair, read_keypair, write_keypair
from slices.units import format_bytes, parse_bytes, parse_duration
from slices.wire import to_wire

Client_ = Callable[[argparse.Namespace], Client]


def _out(a: argparse.Namespace, reply: Any, text: Callable[[dict[str, Any]], str], *, rows: str | None = None) -> int:
    """The reply as a table (``text``), or as JSON: a list command's (``rows``: the field
    holding them) is the array of its rows, as ``list``, ``nodes`` and ``sites`` print theirs."""
    doc = to_wire(reply)
    if a.json:
        print(render.json_text(doc[rows] if rows is not None else doc))
    else:
        print(text(doc))
    return 0


def _public_key(path: str) -> str:
    try:
        return read_keypair(Path(path)).public
    except TransportError as exc:
        raise SliceMeshError(str(exc)) from None


# ---- identity ---------------------------------------------------------------------------------


def cmd_login(a: argparse.Namespace) -> int:
    if a.identity:
        ident = identity.read(Path(a.identity))
        ident = identity.Identity(a.name or ident.name, a.controller or ident.controller, ident.server_key, ident.own, ident.user)
    else:
        if not (a.controller and a.key and a.server_key):
            raise SliceMeshError("login needs --identity FILE, or --controller URL --key YOUR.key_secret --server-key controller.key")
        own = read_keypair(Path(a.key))
        if not own.secret:
            raise SliceMeshError(f"{a.key} holds no secret key: pass your .key_secret file")
        name = a.name or a.controller.removeprefix("tcp://").replace(":", "-").replace("/", "-")
        ident = identity.Identity(name, a.controller, _public_key(a.server_key), own, a.user or "")
    path = identity.write(ident)
    with Client(ident.controller, identity=ident, timeout=a.timeout) as c:
        pong = c.call(Ping())
    print(f"logged in to {ident.controller} as {pong.principal} ({pong.role}); identity saved in {path}")
    return 0


def cmd_keygen(a: argparse.Namespace) -> int:
    base = Path(a.path)
    if base.with_name(base.name + ".key_secret").exists() and not a.force:
        raise SliceMeshError(f"{base}.key_secret exists (use --force to replace it)")
    public, secret = write_keypair(base, new_keypair())
    print(f"public key: {public} (give this file to your testbed's admin)\nsecret key: {secret} (keep it; `slicemesh login --key` it)")
    return 0


def cmd_whoami(a: argparse.Namespace, client: Client_) -> int:
    with client(a) as c:
        pong = c.call(Ping())
    return _out(a, pong, lambda d: whoami_text(d, c.url))


def whoami_text(d: dict[str, Any], url: str) -> str:
    waited = f"users waited at most {d['user_wait_max_ms']:g} ms for the controller's loop in the last minute ({d['user_waits_over_50ms']} times over 50 ms)"
    return f"{d['principal']} ({d['role']}) at {url}; controller {d['version']}, protocol {d['protocol']}\n{waited}"


# ---- keys ---------------------------------------------------------------------------------------


def keys_text(d: dict[str, Any]) -> str:
    rows = [[k["kind"], k["name"], k["state"], k["role"], k["site"], k["fingerprint"], k["address"], render.when(k["updated"])] for k in d["keys"]]
    return render.table(["KIND", "NAME", "STATE", "ROLE", "SITE", "KEY", "FROM", "CHANGED"], rows) if rows else "no keys"


def cmd_keys(a: argparse.Namespace, client: Client_) -> int:
    with client(a) as c:
        if a.keys_cmd in (None, "list"):
            return _out(a, c.call(proto.ListKeys()), keys_text, rows="keys")
        if a.keys_cmd == "token":
            ttl = parse_duration(a.ttl)
            tok = c.call(proto.MakeToken(node=a.node, ttl=float(ttl)))
            return _out(a, tok, lambda d: f"{d['token']}\n(one use, {'node ' + d['node'] if d['node'] else 'any node'}, until {render.when(d['expires'])}: set enrol_token in the agent's config)")
        if a.keys_cmd == "add":
            return _out(a, c.call(proto.TrustKeys(agents={a.node: _public_key(a.file)})), lambda d: f"node {a.node}: key accepted")
        msg = {"accept": proto.AcceptKey, "reject": proto.RejectKey}[a.keys_cmd](name=a.name) if a.keys_cmd != "revoke" else proto.RevokeKey(name=a.name, kind=a.kind)
        return _out(a, c.call(msg), lambda d: f"{d['kind']} {d['name']}: key {d['state']}")


# ---- users and sites --------------------------------------------------------------------------


def users_text(d: dict[str, Any]) -> str:
    rows = [[u["name"], u["site"], u["role"], u["state"], u["fingerprint"], render.when(u["created"])] for u in d["users"]]
    return render.table(["USER", "SITE", "ROLE", "STATE", "KEY", "CREATED"], rows) if rows else "no users"


def cmd_users(a: argparse.Namespace, client: Client_) -> int:
    with client(a) as c:
        if a.users_cmd in (None, "list"):
            return _out(a, c.call(proto.ListUsers()), users_text, rows="users")
        if a.users_cmd == "remove":
            return _out(a, c.call(proto.RemoveUser(name=a.name)), lambda d: f"user {d['name']}: removed (key revoked)")
        made = ""
        if a.key:
            key = _public_key(a.key)
        else:  # PLC made keys for new users too: write the pair for the admin to hand over
            out = Path(a.out or ".") / a.name
            pub, sec = write_keypair(out, new_keypair())
            key, made = read_keypair(pub).public, f"; made its key pair: give {sec} to {a.name} (secret)"
        view = c.call(proto.AddUser(name=a.name, site=a.site, role=a.role, key=key))
        return _out(a, view, lambda d: f"user {d['name']} ({d['role']}) of site {d['site']} added{made}")


def limits_text(d: dict[str, Any]) -> str:
    def lim(used: Any, cap: Any, fmt: Callable[[Any], str] = str) -> str:
        return f"{fmt(used)}/{fmt(cap) if cap else '-'}"

    rows = [
        [
            s["name"],
            s["users"],
            lim(s["used_slices"], s["max_slices"]),
            lim(s["used_slivers"], s["max_slivers"]),
            lim(round(s["used_cpu"], 2), s["max_cpu"]),
            lim(s["used_memory"], s["max_memory"], format_bytes),
            s["max_nodes_per_slice"] or "-",
        ]
        for s in d["sites"]
    ]
    return render.table(["SITE", "USERS", "SLICES", "SLIVERS", "CPU", "MEMORY", "PER SLICE"], rows) if rows else "no sites with users or limits"


def cmd_site_admin(a: argparse.Namespace, client: Client_) -> int:
    with client(a) as c:
        if a.sites_cmd == "limits":
            return _out(a, c.call(proto.ListPolicies()), limits_text, rows="sites")
        if a.sites_cmd == "remove":
            return _out(a, c.call(proto.RemoveSite(name=a.name)), lambda d: f"site {d['name']}: limits removed")
        memory = parse_bytes(a.max_memory) if a.max_memory is not None else None
        msg = proto.SetSite(name=a.name, max_slices=a.max_slices, max_slivers=a.max_slivers, max_cpu=a.max_cpu, max_memory=memory, max_nodes_per_slice=a.max_nodes_per_slice)
        return _out(a, c.call(msg), lambda d: limits_text({"sites": [d]}))


def cmd_orphans(a: argparse.Namespace, client: Client_) -> int:
    action: Literal["list", "adopt", "destroy"] = "adopt" if a.adopt else "destroy" if a.destroy else "list"
    with client(a) as c:
        reply = c.call(Orphans(action=action, node=a.node))

    def text(d: dict[str, Any]) -> str:
        rows = [[o["node"], o["slice"], o["id"], o["isolation"]] for o in d["orphans"]]
        table = render.table(["NODE", "SLICE", "SLIVER", "KIND"], rows) if rows else "no orphans: every sliver on every node belongs to this cluster"
        done = {"adopt": f"\nadopted {d['changed']} slivers into slices you own", "destroy": f"\n{d['changed']} slivers will be destroyed by their nodes"}
        return table + done.get(action, "")

    return _out(a, reply, text, rows="orphans" if action == "list" else None)


def cmd_audit(a: argparse.Namespace, client: Client_) -> int:
    with client(a) as c:
        reply = c.call(proto.ListAudit(limit=a.limit, before=a.before))

    def text(d: dict[str, Any]) -> str:
        rows = [[e["id"], render.when(e["ts"]), e["who"], e["key"], e["action"], e["target"], e["detail"]] for e in reversed(d["entries"])]
        more = f"\n(older: slicemesh audit --before {d['next']})" if d["next"] is not None else ""
        return (render.table(["#", "WHEN", "WHO", "KEY", "ACTION", "TARGET", "DETAIL"], rows) if rows else "no entries") + more

    return _out(a, reply, text)


# ---- the parsers ------------------------------------------------------------------------------


def add_parsers(sub: Any, common: argparse.ArgumentParser, client: Client_) -> None:
    def bind(fn: Callable[[argparse.Namespace, Client_], int]) -> Callable[[argparse.Namespace], int]:
        return lambda a: fn(a, client)

    lg = sub.add_parser("login", parents=[common], help="save an identity (your key pair and the controller's key) for the CLI")
    lg.add_argument("--identity", help="an identity file (e.g. the controller's keys_dir/admin.identity.yaml)")
    lg.add_argument("--key", help="your secret key file (.key_secret)")
    lg.add_argument("--server-key", help="the controller's public key file (controller.key)")
    lg.add_argument("--name", help="a name for this identity (default: from the controller URL)")
    lg.add_argument("--user", help="your user name (informational)")
    lg.set_defaults(func=cmd_login)

    kg = sub.add_parser("keygen", help="make a CURVE key pair: PATH.key (public, for the admin) and PATH.key_secret")
    kg.add_argument("path", help="file name without extension, e.g. ~/.config/slicemesh/alice")
    kg.add_argument("--force", action="store_true", help="replace an existing pair")
    kg.set_defaults(func=cmd_keygen)

    sub.add_parser("whoami", parents=[common], help="who the controller thinks you are").set_defaults(func=bind(cmd_whoami))

    k = sub.add_parser("keys", parents=[common], help="agent and user keys: list, accept, reject, revoke, add, token (admins)")
    ks = k.add_subparsers(dest="keys_cmd", metavar="ACTION")
    ks.add_parser("list", parents=[common], help="every key and its state")
    for verb, what in (("accept", "accept a pending agent key"), ("reject", "refuse a pending agent key for good")):
        p = ks.add_parser(verb, parents=[common], help=what)
        p.add_argument("name", metavar="NODE")
    rv = ks.add_parser("revoke", parents=[common], help="cut off an accepted key at once")
    rv.add_argument("name", metavar="NAME")
    rv.add_argument("--user", dest="kind", action="store_const", const="user", default="agent", help="NAME is a user (default: a node)")
    ad = ks.add_parser("add", parents=[common], help="pre-seed a node's public key (as Salt's accepted keys)")
    ad.add_argument("node")
    ad.add_argument("file", help="the node's public key file (state_dir/agent.key)")
    tk = ks.add_parser("token", parents=[common], help="a one-time enrolment token for a new agent")
    tk.add_argument("--node", help="only for this node name")
    tk.add_argument("--ttl", default="1h", help="how long it stays valid (default 1h)")
    k.set_defaults(func=bind(cmd_keys))

    u = sub.add_parser("users", parents=[common], help="users: list, add, remove (admins)")
    us = u.add_subparsers(dest="users_cmd", metavar="ACTION")
    us.add_parser("list", parents=[common], help="every user")
    ua = us.add_parser("add", parents=[common], help="add a user to a site with a role")
    ua.add_argument("name")
    ua.add_argument("--site", required=True)
    ua.add_argument("--role", choices=ROLES, default="user")
    ua.add_argument("--key", help="the user's public key file (default: make a pair and write it to --out)")
    ua.add_argument("--out", help="where a made pair is written (default: the current directory)")
    ur = us.add_parser("remove", parents=[common], help="remove a user (their key is revoked)")
    ur.add_argument("name")
    u.set_defaults(func=bind(cmd_users))

    orp = sub.add_parser("orphans", parents=[common], help="slivers nodes still run for an earlier cluster: list, --adopt or --destroy (admins)")
    orp.add_argument("--node", help="only this node's")
    what = orp.add_mutually_exclusive_group()
    what.add_argument("--adopt", action="store_true", help="make them slices of yours again, where they run")
    what.add_argument("--destroy", action="store_true", help="have their nodes destroy them")
    orp.set_defaults(func=bind(cmd_orphans))

    au = sub.add_parser("audit", parents=[common], help="who did what, when, from which key")
    au.add_argument("--limit", type=int, default=50)
    au.add_argument("--before", type=int, default=None, help="entries older than this id")
    au.set_defaults(func=bind(cmd_audit))


def cmd_node_admin(a: argparse.Namespace, client: Client_) -> int:
    with client(a) as c:
        view = c.call(NodeAdmin(name=a.node, action=a.nodes_cmd, force=getattr(a, "force", False)))
    said = {
        "cordon": "takes no new slivers",
        "uncordon": "takes new slivers again",
        "drain": "takes no new slivers; each of its slivers is moved elsewhere, started there before it stops here",
        "remove": "removed, and its key revoked",
    }[a.nodes_cmd]
    return _out(a, view, lambda d: f"node {d['name']} {said}")


def add_node_actions(nodes: argparse.ArgumentParser, common: argparse.ArgumentParser, client: Client_) -> None:
    """``slicemesh nodes cordon|uncordon|drain|remove NODE`` beside the plain listing."""
    ns = nodes.add_subparsers(dest="nodes_cmd", metavar="ACTION")
    for verb, what in (
        ("cordon", "no new slivers on NODE"),
        ("uncordon", "NODE takes new slivers again"),
        ("drain", "no new slivers, and move NODE's slivers elsewhere (make-before-break)"),
        ("remove", "remove NODE (only when it holds nothing, unless --force moves them now); revokes its key"),
    ):
        p = ns.add_parser(verb, parents=[common], help=what)
        p.add_argument("node")
        if verb == "remove":
            p.add_argument("--force", action="store_true", help="move its slivers now instead of refusing")
        p.set_defaults(func=lambda a: cmd_node_admin(a, client))


def add_site_actions(sites: argparse.ArgumentParser, common: argparse.ArgumentParser, client: Client_) -> None:
    """``slicemesh sites set|remove|limits`` beside the plain ``slicemesh sites`` listing."""
    ss = sites.add_subparsers(dest="sites_cmd", metavar="ACTION")
    ss.add_parser("limits", parents=[common], help="each site's limits and what its slices use")
    st = ss.add_parser("set", parents=[common], help="create a site or change its limits (admins; 0 = no limit)")
    st.add_argument("name")
    st.add_argument("--max-slices", type=int)
    st.add_argument("--max-slivers", type=int)
    st.add_argument("--max-cpu", type=float)
    st.add_argument("--max-memory", help="e.g. 64Gi")
    st.add_argument("--max-nodes-per-slice", type=int)
    rm = ss.add_parser("remove", parents=[common], help="remove a site's own limits (admins)")
    rm.add_argument("name")
    for p in (st, rm, ss.choices["limits"]):
        p.set_defaults(func=lambda a: cmd_site_admin(a, client))

