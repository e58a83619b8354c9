"""The ``slicemesh`` command: researchers' and operators' entry point.

Failures exit non-zero with one line on stderr; ``--json`` prints machine-readable output,
and on failure a JSON error object on stdout too (``{"error": {"code", "message", "details"}}``),
with the same exit code.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any, NoReturn

from slices import __version__, cli_admin, cli_migrate, cli_shell, cliinput, render, terminal
from slices.client import Client, default_url
from slices.errors import SliceMeshError
from slices.memory import collector_paused
from slices.protocol import (
    CreateSlice,
    DeleteSlice,
    ListNodes,
    ListSites,
    ListSlices,
    ListSlivers,
    PlanSlice,
    Progress,
    RenewSlice,
    ShowSlice,
)
from slices.spec import load_spec_text
from slices.transport import TransportError
from slices.wire import to_wire
from slices.yamlio import load_yaml


def _print_json(obj: Any) -> None:
    print(render.json_text(obj))


def _client(a: argparse.Namespace) -> Client:
    return Client(cliinput.controller_url(a.controller), timeout=a.timeout)


def _shown(c: Client, name: str, timeout: float | None = None) -> dict[str, Any]:
    """A slice as ``show`` prints it (``--json``: the shape it always had). Its slivers come as
    rows (protocol 2.7), whose ``columns`` say how they travelled, not what the slice is."""
    got = c.call(ShowSlice(name=name, rows="arrays"), timeout=timeout)
    with collector_paused():  # a reply's maps and a table's cells are kept until printed: nothing for the collector to find (10,000 rows: a third of the time it took)
        view: dict[str, Any] = to_wire(got)
    del view["columns"]
    return view


def _settings_overrides(a: argparse.Namespace, names: list[str]) -> dict[str, Any]:
    return {n: getattr(a, n) for n in names if getattr(a, n, None) is not None}


# ---- researchers ----------------------------------------------------------------------------


def cmd_create(a: argparse.Namespace) -> int:
    text = cliinput.read_spec(a.spec)
    doc = load_yaml(text, a.spec)
    load_spec_text(text, a.spec)  # local check: fail fast and offline
    with _client(a) as c:
        if a.dry_run:
            result = to_wire(c.call(PlanSlice(spec=doc)))
            if a.json:
                _print_json(result)
            else:
                print(f"dry run: {result['placed']} of {result['wanted']} slivers would be placed; nothing was changed\n")
                print(render.placement_table(result["slivers"], show_state=False))
                print("\nhow each request fared:\n  " + "\n  ".join(result["explanation"]))
            return 0
        if "code" in doc:
            from slices import codeupload  # bundles and their messages: not at every CLI start

            doc = codeupload.resolve(c, doc, a.spec)  # its code bundle, uploaded first
        result = to_wire(c.call(CreateSlice(spec=doc, brief=a.wait)))  # with --wait, the settled slice is shown
        if a.wait:
            result = wait_settled(c, result["name"], a.wait_timeout)
        if a.json:
            _print_json(result)
        else:
            print(render.slice_text(result))
        if a.wait:  # a script can trust the exit code: 0 only when every sliver runs (or finished cleanly)
            return 0 if result["state"] in ("running", "exited") else 1
        return 0 if result["state"] not in ("failed",) else 1


def _progress_line(p: Progress) -> None:
    """On a terminal, one line that the next overwrites: how far a wait got."""
    if sys.stderr.isatty():
        what = f"{p.running} of {p.wanted} slivers running" if p.state != "deleting" else f"{p.placed} nodes still removing it"
        print(f"\r{p.name}: {p.state}, {what}   ", end="", file=sys.stderr, flush=True)


def wait_settled(c: Client, name: str, timeout: float) -> dict[str, Any]:
    """Until the slice settles: the controller says when (and how far it got meanwhile)."""
    p = c.wait(name, "settled", timeout, on_progress=_progress_line)
    if sys.stderr.isatty():
        print(file=sys.stderr)
    if not p.settled:
        raise SliceMeshError(f"slice {name} is still {p.state} after {timeout:g} s ({p.running} of {p.wanted} slivers running)", code="timeout")
    return _shown(c, name, timeout=max(c.timeout, 30))


def _paged(a: argparse.Namespace, what: str, got: Any, records: list[Any], text: Callable[[list[dict[str, Any]]], str]) -> int:
    """A list as asked: all of it, the JSON array as ever; or one page (``--limit``/``--after``),
    whose JSON carries the paging fields and whose table ends with how to get the next page."""
    paging = a.limit is not None or a.after is not None
    with collector_paused():  # see _shown
        rows = to_wire(records)
        if a.json:
            _print_json({what: rows, "total": got.total, "next": got.next} if paging else rows)
            return 0
        print(text(rows))
    if paging:
        more = f"; next page: --after {got.next}" if got.next else ""
        print(f"\n{len(rows)} of {got.total} {what}{more}")
    return 0


def _paging(p: argparse.ArgumentParser, what: str, one: str, name: Callable[[str], str]) -> None:
    p.add_argument("--limit", type=cliinput.whole(1, 100_000), default=None, help=f"at most this many {what}, in name order (default: all)")
    p.add_argument("--after", type=name, default=None, metavar="NAME", help=f"start after this {one} name (the last of the previous page)")


def cmd_list(a: argparse.Namespace) -> int:
    with _client(a) as c:
        got = c.call(ListSlices(limit=a.limit, after=a.after))
    return _paged(a, "slices", got, got.slices, render.slices_text)


def cmd_show(a: argparse.Namespace) -> int:
    with _client(a) as c:
        seen = c.wait(a.name, "change", 0).version if a.watch else 0  # the version this view shows
        while True:
            s = _shown(c, a.name)
            with collector_paused():
                if a.json:
                    _print_json(s)
                else:
                    if a.watch:
                        terminal.clear_screen()
                    print(render.slice_text(s), flush=True)
            if not a.watch:
                return 0
            # Told, not polled: the next view is fetched only once the slice changed.
            p = c.wait(a.name, "change", 3600, seen=seen)
            seen = p.version
            time.sleep(0.5)  # at most two views a second, however busy the slice


def cmd_delete(a: argparse.Namespace) -> int:
    with _client(a) as c:
        r = to_wire(c.call(DeleteSlice(name=a.name)))
        if a.wait:
            p = c.wait(a.name, "deleted", a.wait_timeout, on_progress=_progress_line)
            if sys.stderr.isatty():
                print(file=sys.stderr)
            if p.state != "deleted":
                raise SliceMeshError(f"slice {a.name} was deleted, but {p.placed} nodes had not removed its slivers after {a.wait_timeout:g} s", code="timeout")
    _print_json(r) if a.json else print(render.deleted_text(r, removed=a.wait))
    return 0


def cmd_renew(a: argparse.Namespace) -> int:
    seconds = cliinput.renew_seconds(a.duration)
    with _client(a) as c:
        r = to_wire(c.call(RenewSlice(name=a.name, seconds=seconds)))
    if a.json:
        _print_json(r)
    else:
        print(f"slice {r['name']} now expires {render.when(r['expires'])}" + (" (capped at 56 days from now)" if r["capped"] else ""))
    return 0


def cmd_nodes(a: argparse.Namespace) -> int:
    with _client(a) as c:
        got = c.call(ListNodes(limit=a.limit, after=a.after, rows="arrays"))
    return _paged(a, "nodes", got, got.nodes, render.nodes_text)


def cmd_sites(a: argparse.Namespace) -> int:
    with _client(a) as c:
        sites = to_wire(c.call(ListSites()).sites)
    _print_json(sites) if a.json else print(render.sites_text(sites))
    return 0


def cmd_top(a: argparse.Namespace) -> int:
    with _client(a) as c:
        while True:
            got_nodes, got_slivers = c.call(ListNodes(rows="arrays")).nodes, c.call(ListSlivers(rows="arrays")).slivers
            with collector_paused():  # see _shown
                nodes, slivers = to_wire(got_nodes), to_wire(got_slivers)
                if a.json:
                    _print_json({"nodes": nodes, "slivers": slivers})
                else:
                    if not a.once:
                        terminal.clear_screen()
                    print(f"slicemesh top  {time.strftime('%H:%M:%S')}  {c.url}\n")
                    print(render.top_text(nodes, slivers), flush=True)
            if a.once or a.json:
                return 0
            time.sleep(a.interval)


# ---- operators ------------------------------------------------------------------------------


def _print_settings(cls: type[Any]) -> int:
    """Every setting with its type, default and help line (YAML key; env SLICEMESH_<KEY>)."""
    from slices.settings import describe

    rows = [[name, kind, json.dumps(default), help_] for name, kind, default, help_ in describe(cls)]
    print(render.table(["SETTING", "TYPE", "DEFAULT", "MEANING"], rows))
    return 0


def cmd_controller(a: argparse.Namespace) -> int:
    from controller.main import run
    from controller.settings import ControllerSettings
    from slices.settings import load

    if a.list_settings:
        return _print_settings(ControllerSettings)
    settings = load(ControllerSettings, file=a.config, overrides=_settings_overrides(a, ["listen", "user_listen", "db", "keys_dir", "log_level", "heartbeat_period", "new_cluster"]))
    return run(settings, ready_file=a.ready_file)


def cmd_agent(a: argparse.Namespace) -> int:
    from node_agent.main import run
    from node_agent.settings import AgentSettings
    from slices.settings import load

    if a.list_settings:
        return _print_settings(AgentSettings)
    overrides = _settings_overrides(a, ["name", "site", "state_dir", "log_level"])
    if a.controller_url is not None:
        overrides["controller"] = a.controller_url
    settings = load(AgentSettings, file=a.config, overrides=overrides)
    return run(settings)


def cmd_sim(a: argparse.Namespace) -> int:
    from node_agent.wan.flags import wan_settings_from_args
    from slices.simcluster import SimCluster

    if a.action is not None:
        return sim_action(a)
    if a.node is not None:
        raise SliceMeshError(f"unexpected argument {a.node!r}: `slicemesh sim` runs a simulation; `slicemesh sim fail|restore NODE` acts on one")

    wan = wan_settings_from_args(a)
    cluster = SimCluster(nodes=a.nodes, port=a.port, state_dir=a.state_dir, topology=a.topology, backend=a.backend, per_process=a.agents_per_process, publish_identity=True, wan=wan)

    def ready(url: str) -> None:
        print(f"controller: {url}", flush=True)
        print(f"identity: {cluster.published} (the CLI's current identity: you are this cluster's admin)", file=sys.stderr, flush=True)
        print(f"{len(cluster.nodes)} simulated nodes ({a.backend} backend) registered; Ctrl-C stops everything", file=sys.stderr, flush=True)
        print(f"wide area between nodes: {cluster.wan_path} ({cluster.wan.reason})", file=sys.stderr, flush=True)
        print(f"agents connect to: {cluster.url} (users, to the controller line above)", file=sys.stderr, flush=True)

    cluster.run_until_signal(ready, lambda line: print(line, file=sys.stderr, flush=True))
    return 0


def sim_action(a: argparse.Namespace) -> int:
    """``slicemesh sim fail|restore NODE`` and ``sim status``, from another terminal."""
    from slices import simcontrol

    if a.action != "status" and a.node is None:
        raise SliceMeshError(f"`slicemesh sim {a.action}` needs a node name, e.g. slicemesh sim {a.action} princeton-1")
    sim = simcontrol.find(a.state_dir)
    reply = simcontrol.request(sim, {"op": a.action, "node": a.node})
    if a.json:
        _print_json(reply)
    else:
        print(simcontrol.status_text(reply) if a.action == "status" else reply["message"])
    return 0


def cmd_demo(a: argparse.Namespace) -> int:
    from slices import demo

    return demo.run(backend=a.backend, nodes=a.nodes, spec=a.spec, timeout=a.timeout)


def cmd_bench(a: argparse.Namespace) -> int:
    """Benchmarks load lazily so everyday commands do not pay for their imports."""
    from benchmarks import BENCHMARKS, load

    if a.bench_name not in BENCHMARKS:
        raise SliceMeshError(f"no benchmark {a.bench_name!r}; available: {', '.join(BENCHMARKS)}")
    module = load(a.bench_name)
    bp = argparse.ArgumentParser(prog=f"slicemesh bench {a.bench_name}", description=(module.__doc__ or "").strip())
    bp.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    bp.add_argument("--quick", action="store_true", help="a small version that runs in seconds")
    module.add_arguments(bp)
    args = bp.parse_args(a.bench_args)
    result = module.run(args)
    if args.json:
        print(json.dumps(result, sort_keys=True, default=str))
    return 0


# ---- the parser -----------------------------------------------------------------------------


class UsageError(SliceMeshError):
    code = "usage"


class Parser(argparse.ArgumentParser):
    """argparse's parser, but a script that asked for ``--json`` gets its refusal of the
    command line as a JSON error object too (exit code 2 as ever). Sub-parsers are of this class."""

    json_wanted = False  # set by ``_main`` from the command line, before parsing
    exec_without_dashes = False  # ``slicemesh exec SLICE CMD``: say where the command goes

    def error(self, message: str) -> NoReturn:
        if self.exec_without_dashes and message.startswith("unrecognized arguments"):
            message += " (the command goes after --: slicemesh exec SLICE -- CMD ...)"
        if not self.json_wanted:
            super().error(message)
        self.print_usage(sys.stderr)
        raise UsageError(message if self.prog == "slicemesh" else f"{self.prog.removeprefix('slicemesh ')}: {message}")


def json_error(exc: SliceMeshError) -> dict[str, Any]:
    """The object ``--json`` prints on failure: a stable code, the human line, the details."""
    return {"error": {"code": exc.code, "message": exc.reason, "details": exc.details}}


def parser() -> argparse.ArgumentParser:
    from node_agent.wan.flags import add_wan_arguments
    p = Parser(prog="slicemesh", description="PlanetLab-style slices: isolated slivers at the locations you ask for.")
    p.add_argument("--version", action="version", version=f"slicemesh {__version__}")
    common = Parser(add_help=False)
    common.add_argument("--controller", default=None, help="controller URL (default $SLICEMESH_CONTROLLER, or your identity's controller)")
    common.add_argument("--timeout", type=cliinput.seconds(0.1, 3600), default=15.0, help="seconds to wait for the controller (default 15)")
    common.add_argument("--json", action="store_true", help="machine-readable output")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    c = sub.add_parser("create", parents=[common], help="create a slice from a YAML spec")
    c.add_argument("spec", help="the slice spec (YAML file, or - for stdin)")
    c.add_argument("--dry-run", action="store_true", help="show the placement or why it is impossible; change nothing")
    c.add_argument("--wait", action="store_true", help="return when the slice is running or failed")
    c.add_argument("--wait-timeout", type=cliinput.seconds(0.1, 86400), default=120.0, help="seconds --wait waits (default 120)")
    c.set_defaults(func=cmd_create)

    ls = sub.add_parser("list", parents=[common], help="list slices (those you may see)")
    _paging(ls, "slices", "slice", cliinput.slice_name)
    ls.set_defaults(func=cmd_list)
    s = sub.add_parser("show", parents=[common], help="show a slice and where its slivers run")
    s.add_argument("name", type=cliinput.slice_name)
    s.add_argument("--watch", "-w", action="store_true", help="show it again whenever it changes (Ctrl-C stops)")
    s.set_defaults(func=cmd_show)
    d = sub.add_parser("delete", parents=[common], help="delete a slice and its slivers")
    d.add_argument("name", type=cliinput.slice_name)
    d.add_argument("--wait", action="store_true", help="return once every node removed its slivers")
    d.add_argument("--wait-timeout", type=cliinput.seconds(0.1, 86400), default=120.0, help="seconds --wait waits (default 120)")
    d.set_defaults(func=cmd_delete)
    r = sub.add_parser("renew", parents=[common], help="extend a slice's lease")
    r.add_argument("name", type=cliinput.slice_name)
    r.add_argument("--for", dest="duration", required=True, help="how much longer, e.g. 7d (never past 56 days from now)")
    r.set_defaults(func=cmd_renew)
    cli_shell.add_parsers(sub, common, _client)
    cli_migrate.add_parsers(sub, common, _client)
    tp = sub.add_parser("top", parents=[common], help="live per-node and per-sliver usage (CoMon/slicestat style)")
    tp.add_argument("--once", action="store_true", help="print once and exit")
    tp.add_argument("--interval", type=cliinput.seconds(0.1, 3600), default=2.0)
    tp.set_defaults(func=cmd_top)
    nodes = sub.add_parser("nodes", parents=[common], help="list nodes; cordon, uncordon, drain or remove one (admins)")
    _paging(nodes, "nodes", "node", cliinput.node_name)
    nodes.set_defaults(func=cmd_nodes)
    cli_admin.add_node_actions(nodes, common, _client)
    sites = sub.add_parser("sites", parents=[common], help="list sites; set, remove or show their limits (admins)")
    sites.set_defaults(func=cmd_sites)
    cli_admin.add_site_actions(sites, common, _client)
    cli_admin.add_parsers(sub, common, _client)

    ctl = sub.add_parser("controller", help="run the controller")
    ctl.add_argument("--config", help="controller.yaml")
    ctl.add_argument("--listen", help="the agents' socket: ZeroMQ bind endpoint (default tcp://*:7700)")
    ctl.add_argument("--user-listen", help="the users' socket, served first (default: --listen's address, next port; off: none)")
    ctl.add_argument("--db", help="SQLite file")
    ctl.add_argument("--keys-dir", help="the controller's key pair and the first admin's identity")
    ctl.add_argument("--new-cluster", action="store_const", const=True, default=None, help="begin an empty cluster although this database's marker says one ran here (the database was lost)")
    ctl.add_argument("--heartbeat-period", type=cliinput.seconds(0.01, 3600), default=None, help="seconds between heartbeats in a small cluster")
    ctl.add_argument("--log-level", default=None)
    ctl.add_argument("--ready-file", help="write the agents' bound URL here once listening (users are answered there too)")
    ctl.add_argument("--list-settings", action="store_true", help="print every setting (YAML key, SLICEMESH_<KEY>) and exit")
    ctl.set_defaults(func=cmd_controller)

    ag = sub.add_parser("agent", help="run a node agent")
    ag.add_argument("--config", help="agent.yaml")
    ag.add_argument("--controller", dest="controller_url", default=None, help="controller URL")
    ag.add_argument("--name", help="node name")
    ag.add_argument("--site", help="site name")
    ag.add_argument("--state-dir", help="agent state directory")
    ag.add_argument("--log-level", default=None)
    ag.add_argument(
        "--list-settings", action="store_true", help="print every setting (YAML key or section.key, SLICEMESH_<KEY> with the dot as _) and exit"
    )
    ag.set_defaults(func=cmd_agent)

    sm = sub.add_parser("sim", help="run a simulated cluster until Ctrl-C; fail or restore one of its nodes")
    sm.add_argument("action", nargs="?", choices=("fail", "restore", "status"), help="act on a running simulation: fail NODE (kill its agent), restore NODE, status")
    sm.add_argument("node", nargs="?", help="the simulated node to fail or restore")
    sm.add_argument("--json", action="store_true", help="machine-readable output (fail, restore, status)")
    sm.add_argument("--nodes", type=cliinput.whole(1, 100_000), default=None, help="simulated machines (default 24; with --topology, every machine in it)")
    sm.add_argument("--port", type=cliinput.whole(0, 65535), default=0, help="controller port on 127.0.0.1 (default: a free one)")
    sm.add_argument("--state-dir", help="keep controller DB, agent state and logs here (default: a temp dir, removed); with fail|restore|status: the simulation to reach")
    sm.add_argument("--topology", help="CSV of sites: site, city, country, continent, lat, lon, machines")
    sm.add_argument("--backend", choices=("sim", "real"), default="sim", help="sim: accounting only; real: runc containers and QEMU VMs")
    sm.add_argument("--agents-per-process", type=cliinput.whole(0, 100_000), default=0, help="simulated agents per process (default: automatic)")
    add_wan_arguments(sm)
    sm.set_defaults(func=cmd_sim)

    dm = sub.add_parser("demo", help="simulated cluster + example slices, shown, then a clean stop")
    dm.add_argument("--nodes", type=cliinput.whole(1, 100_000), default=None, help="simulated machines (default 24; 4 with --backend real)")
    dm.add_argument("--backend", choices=("sim", "real"), default="sim", help="sim: accounting only; real: runc containers and QEMU VMs")
    dm.add_argument("--spec", help="slice spec to create (default examples/cdn-probe.yaml; with --backend real pair.yaml and vm-pair.yaml)")
    dm.add_argument("--timeout", type=cliinput.seconds(0.1, 3600), default=15.0)
    dm.set_defaults(func=cmd_demo)
    bench = sub.add_parser("bench", help="run a benchmark (see docs/benchmarks.md)", add_help=False)
    bench.add_argument("bench_name", metavar="NAME", help="placement, e2e, heartbeat, churn, footprint, container, wan, isolation or responsiveness")
    bench.add_argument("bench_args", nargs=argparse.REMAINDER, help="the benchmark's own options (NAME --help)")
    bench.set_defaults(func=cmd_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    with terminal.escaped_output():  # every line printed passes one gate (slices/terminal.py)
        return _main(argv)


def _fail(exc: SliceMeshError, as_json: bool, status: int = 1) -> int:
    """One line on stderr, whatever a remote reason holds; with ``--json`` the error object on
    stdout as well. A command ``exec`` could not start exits as a shell's would (126, 127)."""
    if as_json:
        _print_json(json_error(exc))
    line = f"slicemesh: {exc.code}: {exc.reason}" if exc.code not in ("error",) else f"slicemesh: {exc.reason}"
    print(terminal.printable(line), file=sys.stderr)
    code = (exc.details or {}).get("exit_code") if exc.code == "exec-failed" else None
    return code if isinstance(code, int) and 1 <= code <= 255 else status


def _main(argv: list[str] | None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    command: list[str] | None = None
    if args[:1] == ["exec"]:  # the command after -- is the command's, never ours to parse
        args, command = cli_shell.split_exec_argv(args)
    Parser.json_wanted = "--json" in args
    Parser.exec_without_dashes = args[:1] == ["exec"] and command is None
    try:
        a = parser().parse_args(args)
    except UsageError as exc:
        return _fail(exc, True, 2)
    if command is not None:
        a.argv = command
    if getattr(a, "controller", None) is None and "controller" in a:
        a.controller = default_url()
    as_json = bool(getattr(a, "json", False))
    try:
        return int(a.func(a))
    except SliceMeshError as exc:
        return _fail(exc, as_json)
    except TransportError as exc:  # a URL the pattern let through but ZeroMQ refuses
        return _fail(SliceMeshError(str(exc)), as_json)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        os._exit(0)
    except OSError as exc:  # a file, a socket, a permission: say which, in one line
        why = f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")
        return _fail(SliceMeshError(why, details={"errno": exc.errno, "file": exc.filename}), as_json)


if __name__ == "__main__":
    raise SystemExit(main())
