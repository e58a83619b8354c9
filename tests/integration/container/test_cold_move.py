"""Cold moves of real container slivers between two nodes' runc backends on this host (each
node with its own bridge, subnet, cgroups, address pool and user-namespace id range): the
files a sliver wrote arrive with it, owned by its new id range; a failed send leaves it
running where it was; a target that gets no disk, or a bad one, leaves nothing behind."""

from __future__ import annotations

import contextlib
import dataclasses
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from ctr_helpers import PREFIX, make_machine, run_in, spec

from node_agent.backends.base import BackendError
from node_agent.backends.runc.backend import RuncBackend
from node_agent.backends.runc.settings import RuncSettings
from slices.migration import Migration
from slices.model import SliverStatus
from slices.waiting import wait_until
from tests.integration.realhost import sweep

pytestmark = pytest.mark.timeout(180)
TOKEN = "b" * 32


@pytest.fixture
def two_nodes(state_root: Path, images_dir: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., tuple[RuncBackend, RuncBackend]]]:
    made: list[RuncBackend] = []
    state = state_root / request.node.name[:40]

    def make(**kw: object) -> tuple[RuncBackend, RuncBackend]:
        for node in ("c1", "c2"):
            made.append(RuncBackend(make_machine(state / node, images_dir, node=node), state / node / "runc", RuncSettings(**kw)))  # type: ignore[arg-type]
        return made[0], made[1]

    yield make
    for b in made:
        with contextlib.suppress(Exception):
            for st in b.list():
                b.destroy(st.id)
        with contextlib.suppress(Exception):
            b.close()
        with contextlib.suppress(Exception):
            b.machine.forget()
    sweep(state, PREFIX)


def incoming(dst: RuncBackend, base: object, **kw: object) -> SliverStatus:
    st = dst.create(dataclasses.replace(base, migration=Migration(role="in", kind="cold", token=TOKEN, peer="c1")))  # type: ignore[type-var]
    assert st.state == "pending" and st.migration is not None and st.migration.phase == "listening" and st.migration.port > 0
    return st


def test_a_container_moves_cold_with_its_files(two_nodes: Callable[..., tuple[RuncBackend, RuncBackend]]) -> None:
    src, dst = two_nodes()
    sid = f"{PREFIX}-cold"
    base = spec(sid)
    assert src.create(base).state == "running"
    assert run_in(src, sid, "mkdir -p /data && echo kept > /data/file && ln -s file /data/link && sync")[0] == 0
    old_address = src.machine.addresses.get(sid)

    port = incoming(dst, base).migration.port  # type: ignore[union-attr]
    rep = src.send(dataclasses.replace(base, migration=Migration(role="out", kind="cold", token=TOKEN, peer="c2", endpoint=f"127.0.0.1:{port}")))
    assert rep.phase == "sent" and rep.kind == "cold" and rep.disk_bytes > 0 and rep.bytes >= rep.disk_bytes and 0 < rep.downtime_ms <= rep.total_ms
    assert src.status(sid).state == "stopped"

    arrived = wait_until(lambda: (st := dst.status(sid)).state != "pending" and st, 60, "the moved sliver to start")
    assert arrived.state == "running", arrived
    assert arrived.migration is not None and arrived.migration.phase == "received"
    code, out, err = run_in(dst, sid, "cat /data/file; readlink /data/link; stat -c '%u %g' /data/file; touch /data/new && echo writable")
    assert code == 0, err
    assert out.split() == ["kept", "file", "0", "0", "writable"]  # root's file in its new id range is root's
    assert dst.machine.addresses.get(sid) != old_address
    src.destroy(sid)
    assert src.pid(sid) is None and dst.status(sid).state == "running"


def test_a_failed_send_leaves_the_container_running_where_it_was(two_nodes: Callable[..., tuple[RuncBackend, RuncBackend]]) -> None:
    src, _ = two_nodes()
    sid = f"{PREFIX}-stay"
    base = spec(sid)
    src.create(base)
    assert run_in(src, sid, "echo here > /tmp/x")[0] == 0
    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    with pytest.raises(BackendError, match="cold move to c2 failed"):
        src.send(dataclasses.replace(base, migration=Migration(role="out", kind="cold", token=TOKEN, peer="c2", endpoint=f"127.0.0.1:{dead}")))
    assert src.status(sid).state == "running"
    assert run_in(src, sid, "echo still")[1].strip() == "still"


def test_a_target_without_its_disk_fails_and_leaves_nothing(two_nodes: Callable[..., tuple[RuncBackend, RuncBackend]]) -> None:
    _, dst = two_nodes(incoming_timeout=1.0)
    sid = f"{PREFIX}-none"
    incoming(dst, spec(sid))
    st = wait_until(lambda: (s := dst.status(sid)).state != "pending" and s, 10, "the target to give up")
    assert st.state == "failed" and "in time" in (st.reason or "")
    assert dst.status(sid).state == "lost"
    assert not (dst.slivers_dir).joinpath(sid).exists() and dst.machine.addresses.get(sid) is None
