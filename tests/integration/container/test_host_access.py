"""From inside real slivers: the host is closed to them but for what the operator allows.

A listener on every address of the host (the bridge address, 127.0.0.1, the bridge of
another node, IPv6 link-local) is refused from a sliver at once, an allowed port is
reachable on the gateway only, slivers of one node still reach each other, what a sliver
sends through the host to another node is refused unless a simulated wide area made the two
nodes peers, and the node's table goes with the node.
"""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path

import pytest
from ctr_helpers import PREFIX, make_machine, py_in, spec

from node_agent import firewall
from node_agent.backends.runc.backend import RuncBackend
from node_agent.backends.runc.settings import RuncSettings
from node_agent.netdev import bridge_name
from node_agent.userns import UsernsError
from slices.errors import SpecError
from tests.conftest import ControllerThread, wait_for

pytestmark = pytest.mark.timeout(120)

PROBE = r"""
import errno, json, socket, struct, sys, time

def tcp(host, port):
    info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    deadline = time.monotonic() + 5  # eth0's own IPv6 link-local address is tentative for ~1 s
    while True:
        t = time.monotonic()
        try:
            with socket.socket(info[0], socket.SOCK_STREAM) as s:
                s.settimeout(4)
                s.connect(info[4])
                s.sendall(b"hello")
                result = "open"
        except socket.timeout:
            result = "timeout"
        except OSError as exc:
            result = errno.errorcode.get(exc.errno, str(exc))
        if result != "EADDRNOTAVAIL" or time.monotonic() > deadline:
            return result, round(time.monotonic() - t, 2)
        time.sleep(0.1)

def udp(host, port):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2)
        s.connect((host, port))
        s.send(b"hello")
        try:
            s.recv(100)
            return "answered"
        except socket.timeout:
            return "timeout"
        except OSError as exc:
            return errno.errorcode.get(exc.errno, str(exc))

def ping(host):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP) as s:
        s.settimeout(2)
        s.sendto(struct.pack("!BBHHH", 8, 0, 0, 0, 1) + b"probe", (host, 0))
        try:
            return "reply" if s.recvfrom(1500)[0][0] == 0 else "other"
        except socket.timeout:
            return "timeout"

targets = json.loads(sys.argv[1])
out = {name: tcp(host, port) for name, (host, port) in targets["tcp"].items()}
out.update({name: udp(host, port) for name, (host, port) in targets["udp"].items()})
out.update({name: ping(host) for name, host in targets["ping"].items()})
print(json.dumps(out))
"""
SERVER = "import socket; s = socket.create_server(('0.0.0.0', 7000)); print('listening', flush=True)\nwhile True: s.accept()[0].close()"


def _link_local(ifname: str) -> str | None:
    out = subprocess.run(["ip", "-6", "-o", "addr", "show", "dev", ifname, "scope", "link"], capture_output=True, text=True).stdout
    return out.split()[3].split("/")[0] if out.strip() else None


def _forward(bridge: str) -> None:
    """Forwarding on our own test bridge only (the host's ip_forward stays off), so that the
    forward chain, not the kernel's refusal to route, is what stops sliver -> other node."""
    Path(f"/proc/sys/net/ipv4/conf/{bridge}/forwarding").write_text("1\n")


def test_host_is_closed_but_for_the_allowed_port(make_backend, state_root: Path, images_dir: Path) -> None:  # type: ignore[no-untyped-def]
    closed = socket.create_server(("::", 0), family=socket.AF_INET6, dualstack_ipv6=True)  # every host address
    opened = socket.create_server(("::", 0), family=socket.AF_INET6, dualstack_ipv6=True)
    udp_closed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp_closed.bind(("0.0.0.0", 0))
    for s in (closed, opened, udp_closed):
        s.setblocking(False)
    c_port, o_port, u_port = closed.getsockname()[1], opened.getsockname()[1], udp_closed.getsockname()[1]
    backend: RuncBackend = make_backend(machine={"host_access": [f"tcp/{o_port}", "icmp/echo"]})
    other = RuncBackend(make_machine(state_root / "other-node", images_dir, "n2"), state_root / "other-node" / "runc", RuncSettings(warm_slots=0))
    try:
        assert firewall.tables(backend.net.bridge) == [backend.net.bridge]
        backend.create(spec("probe", image="host"))
        backend.create(spec("peer", image="host", command=("python3", "-c", SERVER)))
        other.create(spec("far", image="host", command=("python3", "-c", SERVER)))
        for b, sid in ((backend, "peer"), (other, "far")):
            wait_for(lambda b=b, sid=sid: b"listening" in b.logs(sid, None, 100)[0], what=f"{sid} listening")
        _forward(backend.net.bridge)
        _forward(other.net.bridge)
        gw, gw2 = backend.net.gateway, other.net.gateway
        tcp = {
            "gateway": (gw, c_port),
            "loopback": ("127.0.0.1", c_port),  # the sliver's own loopback: the host's is not routable to it
            "other node's gateway": (gw2, c_port),
            "allowed port on the other gateway": (gw2, o_port),
            "allowed port": (gw, o_port),
            "sliver on this node": (backend.net.address_of("peer"), 7000),
            "sliver on another node": (other.net.address_of("far"), 7000),
        }
        ll = _link_local(backend.net.bridge)
        if Path(f"/proc/sys/net/ipv6/conf/{backend.net.bridge}/disable_ipv6").read_text().strip() == "0":
            assert ll, "IPv6 is on, so the bridge has a link-local address a sliver could try"
            tcp["gateway's IPv6 link-local"] = (f"{ll}%eth0", c_port)
        targets = {"tcp": tcp, "udp": {"gateway udp": (gw, u_port)}, "ping": {"gateway ping": gw}}
        code, out, err = py_in(backend, "probe", PROBE, json.dumps(targets), timeout=60)
        assert code == 0, err
        got = json.loads(out)
        # A simulated wide area routes between the two bridges: while it runs they are peers.
        bridges, subnets = [backend.net.bridge, other.net.bridge], [backend.net.subnet, other.net.subnet]
        assert firewall.open_peers([*bridges, f"{PREFIX[:8]}-nosuch"], subnets) == bridges  # no table: left alone
        far = {"tcp": {"sliver on another node": tcp["sliver on another node"]}, "udp": {}, "ping": {}}
        peered = json.loads(py_in(backend, "probe", PROBE, json.dumps(far))[1])
        firewall.close_peers(bridges)
        unpeered = json.loads(py_in(backend, "probe", PROBE, json.dumps(far))[1])
    finally:
        for st in other.list():
            other.destroy(st.id)
        other.close()
        other.machine.forget()
    refused_fast = ("gateway", "loopback", "other node's gateway", "allowed port on the other gateway", "sliver on another node")
    for name in refused_fast:
        assert got[name][0] == "ECONNREFUSED" and got[name][1] < 1.0, (name, got)
    assert got["allowed port"][0] == "open", got
    assert got["sliver on this node"][0] == "open", got
    if ll:  # IPv6 is on: refused as well (neighbour discovery passes, the SYN gets a reset)
        assert got["gateway's IPv6 link-local"][0] == "ECONNREFUSED", got
    assert got["gateway udp"] == "ECONNREFUSED", got
    assert got["gateway ping"] == "reply", got
    assert peered["sliver on another node"][0] == "open" and unpeered["sliver on another node"][0] == "ECONNREFUSED", (peered, unpeered)
    accepted = opened.accept()[0]  # the allowed connection did arrive
    assert accepted.recv(10) == b"hello"
    accepted.close()
    with pytest.raises(BlockingIOError):
        closed.accept()  # nothing from a sliver ever reached the closed listener
    with pytest.raises(BlockingIOError):
        udp_closed.recv(100)
    for s in (closed, opened, udp_closed):
        s.close()
    assert firewall.tables(other.net.bridge) == []  # the forgotten node's table went with it


def test_rules_are_replaced_not_duplicated_and_vanish_with_the_node(backend: RuncBackend) -> None:
    table = backend.net.bridge
    pool = backend.machine.addresses
    backend.machine.set_slices([], [], {"a1": ("alpha", pool.allocate("a1")), "a2": ("alpha", pool.allocate("a2")), "b1": ("beta", pool.allocate("b1"))})

    def listed() -> str:
        return "".join(subprocess.run(["nft", "list", "table", family, table], capture_output=True, text=True, check=True).stdout for family in ("inet", "bridge"))

    before = listed()
    assert pool.allocate("a1") in before and f'"{backend.net.ports("b1")[1]}"' in before, before
    backend.net.ensure_bridge()  # what an agent restart does
    # the same rules, once; and the slices' sets and the port guard as they were, so a
    # restarted agent's slivers stay apart until its first reconcile writes them again
    assert listed() == before and firewall.tables(table) == [table]
    for st in backend.list():
        backend.destroy(st.id)
    backend.close()
    backend.machine.forget()
    assert firewall.tables(table) == []


def test_tables_lost_while_the_agent_runs_are_made_again_with_their_sets(backend: RuncBackend) -> None:
    """A flushed ruleset (or a firewall service that loads its own) removes the node's tables
    while its slivers run: the agent's periodic check makes them again, rules and sets."""
    table = backend.net.bridge
    pool = backend.machine.addresses
    backend.machine.set_slices([], [], {"a1": ("alpha", pool.allocate("a1")), "b1": ("beta", pool.allocate("b1"))})

    def listed() -> str:
        return "".join(subprocess.run(["nft", "list", "table", family, table], capture_output=True, text=True, check=True).stdout for family in ("inet", "bridge"))

    before = listed()
    assert backend.machine.check_firewall() is False and firewall.present(table), "there: nothing to do"
    for family in ("inet", "bridge"):  # what `nft flush ruleset` does to them (the host's other tables spared)
        subprocess.run(["nft", "delete", "table", family, table], check=True, timeout=10)
    assert not firewall.present(table)
    assert backend.machine.check_firewall() is True
    assert listed() == before, "the same rules, the same slice sets and port guard"
    subprocess.run(["nft", "delete", "table", "bridge", table], check=True, timeout=10)  # one of the two gone
    assert backend.machine.check_firewall() is True and listed() == before


def test_a_table_of_another_version_is_made_anew(backend: RuncBackend) -> None:
    table = backend.net.bridge
    old = f"table inet {table}\ndelete table inet {table}\ntable inet {table} {{\n\tset pairs {{\n\t\ttype ipv4_addr\n\t}}\n}}\n"
    subprocess.run(["nft", "-f", "-"], input=old, text=True, check=True, capture_output=True, timeout=30)  # a set of another type
    backend.net.ensure_bridge()  # nft refuses to amend it: deleted and made anew
    listed = subprocess.run(["nft", "list", "set", "inet", table, "pairs"], capture_output=True, text=True, check=True).stdout
    assert "type ipv4_addr . ipv4_addr" in listed
    assert f'iifname "{table}" jump from_slivers' in subprocess.run(["nft", "list", "table", "inet", table], capture_output=True, text=True, check=True).stdout


def test_bad_node_settings_fail_before_anything_is_made(make_backend) -> None:  # type: ignore[no-untyped-def]
    bridge = bridge_name(PREFIX, "n1")
    with pytest.raises(SpecError, match=r"sliver_host_access\[1\]: 'tcp/ssh'"):
        make_backend(machine={"host_access": ["udp/53", "tcp/ssh"]})
    with pytest.raises(UsernsError, match=r"uid block 128 is outside 1..127"):
        make_backend(machine={"uid_block": 128})
    assert firewall.tables(bridge) == []
    assert not Path(f"/sys/class/net/{bridge}").exists()
    assert not [p for p in Path("/sys/fs/cgroup").glob(f"*/{PREFIX}/n1")], "no node cgroup either"


def test_the_controller_on_every_address_is_out_of_reach(backend: RuncBackend, tmp_path: Path) -> None:
    """Issue 8's case: a controller with ``listen: tcp://*:PORT`` on the node's host."""
    controller = ControllerThread(tmp_path / "c.db", listen="tcp://*:*")
    try:
        port = int(controller.url.rsplit(":", 1)[1])
        users = int(controller.user_url.rsplit(":", 1)[1])  # the users' socket, on every address too
        backend.create(spec("zmtp", image="host"))
        where = {"gateway": (backend.net.gateway, port), "loopback": ("127.0.0.1", port), "users-gateway": (backend.net.gateway, users), "users-loopback": ("127.0.0.1", users)}
        targets = {"tcp": where, "udp": {}, "ping": {}}
        code, out, err = py_in(backend, "zmtp", PROBE, json.dumps(targets))
        assert code == 0, err
        assert {k: v[0] for k, v in json.loads(out).items()} == dict.fromkeys(where, "ECONNREFUSED")
        for p in (port, users):
            with socket.create_connection((backend.net.gateway, p), timeout=5):
                pass  # the host itself still reaches it on that address
    finally:
        controller.stop()


def test_the_slice_sets_follow_changes_as_changes_and_mend_what_changed_behind_the_agent(backend: RuncBackend, caplog: pytest.LogCaptureFixture) -> None:
    """A changed address in a big slice is a line of nft, not every pair again; a set changed
    behind the agent's back (a deletion that finds nothing) is written whole instead."""
    from slices.protocol import Peer

    table = backend.net.bridge
    pool = backend.machine.addresses
    local = {"a1": ("alpha", pool.allocate("a1")), "b1": ("beta", pool.allocate("b1"))}
    me = local["a1"][1]

    def alpha(*addresses: str) -> list[Peer]:
        return [Peer(sliver=f"alpha-{i}", slice="alpha", address=a) for i, a in enumerate(addresses)]

    def pairs() -> set[str]:
        out = subprocess.run(["nft", "-j", "list", "set", "inet", table, "pairs"], capture_output=True, text=True, check=True, timeout=10).stdout
        elems = next(item["set"] for item in json.loads(out)["nftables"] if "set" in item).get("elem", [])
        return {" . ".join(e["concat"]) for e in elems}

    def both_ways(*others: str) -> set[str]:
        return {f"{me} . {o}" for o in others} | {f"{o} . {me}" for o in others}

    assert backend.machine.set_slices(alpha("10.250.1.2", "10.250.2.2"), [], local)
    assert pairs() == both_ways("10.250.1.2", "10.250.2.2")
    written = backend.machine.written
    assert written is not None and written["inet", "pairs"] == both_ways("10.250.1.2", "10.250.2.2")
    assert backend.machine.set_slices(alpha("10.250.1.2", "10.250.3.2"), [], local)  # alpha-1 readdressed
    assert pairs() == both_ways("10.250.1.2", "10.250.3.2")
    assert "not as written" not in caplog.text, "written as the change"
    subprocess.run(["nft", "flush", "set", "inet", table, "pairs"], check=True, timeout=10)  # behind the agent's back
    assert backend.machine.set_slices(alpha("10.250.1.2"), [], local)  # a deletion that finds nothing
    assert pairs() == both_ways("10.250.1.2"), "written whole when the change could not be"
    assert "were not as written; writing them whole" in caplog.text
    assert backend.machine.set_slices(alpha("10.250.1.2", "10.250.4.2"), [], local)
    assert pairs() == both_ways("10.250.1.2", "10.250.4.2")
