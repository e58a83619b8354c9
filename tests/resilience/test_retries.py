"""Retries with the same request id are answered, never applied twice, also across a
controller restart; and a restart marks no node down while its agent comes back.

A retry is a raw resend of the same envelope (what ``Client.call`` does on a timeout), so
these tests control the request id and the moment of the restart exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from slices.codec import Envelope, decode, encode
from slices.protocol import CreateSlice, DeleteSlice, ListNodes, ListSlices, Message, RenewSlice, ShowSlice
from slices.transport import Dealer
from tests.conftest import AgentsThread, ControllerThread, wait_for
from tests.resilience.procs import spec

pytestmark = pytest.mark.timeout(90)


class Restartable:
    """An in-process controller that can be stopped and started again on its database and port."""

    def __init__(self, db: Path, **settings: Any) -> None:
        self.db, self.settings = db, settings
        self.c = ControllerThread(db, **settings)

    def restart(self, **settings: Any) -> None:
        where = self.c.endpoints()
        self.c.stop()
        self.c = ControllerThread(self.db, **{**self.settings, **where, **settings})

    def send(self, msg: Message, request_id: str) -> Envelope:
        """One attempt of a request with a fixed id, on a fresh connection (as a client
        whose socket was rebuilt would); its reply."""
        d = Dealer(self.c.url, "retrying-client", self.c.admin.keys)
        try:
            d.send(encode(msg, id=request_id, sender="retrying-client"))
            assert d.wait(10), f"no reply to {msg.TYPE} {request_id}"
            return decode(d.recv() or b"")
        finally:
            d.close()


@pytest.fixture
def cluster(tmp_path: Path, nodes24: list[dict[str, Any]]) -> Iterator[tuple[Restartable, AgentsThread]]:
    r = Restartable(tmp_path / "c.db")
    agents = AgentsThread(r.c, nodes24[:6], state_dir=tmp_path / "agents")  # type: ignore[arg-type]
    with r.c.client() as c:
        wait_for(lambda: sum(n.state == "up" for n in c.call(ListNodes()).nodes) == 6, timeout=30, what="6 nodes up")
    yield r, agents
    agents.stop()
    r.c.stop()


def test_a_create_retried_across_a_restart_is_answered_not_repeated(cluster: tuple[Restartable, AgentsThread]) -> None:
    r, _ = cluster
    first = r.send(CreateSlice(spec=spec("once", 3)), "create-1")
    assert first.type == "ok"
    r.restart()
    again = r.send(CreateSlice(spec=spec("once", 3)), "create-1")
    assert again.msg == first.msg, "the same answer: the same slice, the same slivers"
    with r.c.client() as c:
        assert [s.name for s in c.call(ListSlices()).slices] == ["once"]
        assert len(c.call(ShowSlice(name="once")).slivers) == 3
        c.call(DeleteSlice(name="once"))
    r.restart()
    late = r.send(CreateSlice(spec=spec("once", 3)), "create-1")  # a retry that arrives after the slice was deleted
    assert late.msg == first.msg, "still the first answer"
    with r.c.client() as c:
        assert c.call(ListSlices()).slices == [], "and no second slice"


def test_renew_and_delete_retried_across_a_restart_apply_once(cluster: tuple[Restartable, AgentsThread]) -> None:
    r, _ = cluster
    with r.c.client() as c:
        c.call(CreateSlice(spec=spec("kept", 2)))
        expires = c.call(ShowSlice(name="kept")).expires
    renewed = r.send(RenewSlice(name="kept", seconds=3600), "renew-1")
    r.restart()
    assert r.send(RenewSlice(name="kept", seconds=3600), "renew-1").msg == renewed.msg
    with r.c.client() as c:
        assert c.call(ShowSlice(name="kept")).expires == pytest.approx(expires + 3600), "extended once"
    deleted = r.send(DeleteSlice(name="kept"), "delete-1")
    result = deleted.msg.result  # type: ignore[attr-defined]
    assert deleted.type == "ok" and (result["name"], result["slivers"], len(result["released"])) == ("kept", 2, 2)
    r.restart()
    assert r.send(DeleteSlice(name="kept"), "delete-1").msg == deleted.msg, "the same answer, not 'no slice named kept'"


def test_another_caller_reusing_an_id_is_not_answered_from_the_first(cluster: tuple[Restartable, AgentsThread]) -> None:
    """Replies are kept per caller key: one client's id says nothing about another's."""
    r, _ = cluster
    assert r.send(CreateSlice(spec=spec("mine", 1)), "shared-id").type == "ok"
    r.restart()
    other = r.c.as_user("other", site="princeton")
    with other:
        view = other.call(CreateSlice(spec=spec("theirs", 1)))
    assert view.name == "theirs"


def test_a_restart_marks_no_node_down_while_agents_come_back(tmp_path: Path, nodes24: list[dict[str, Any]]) -> None:
    """Agents that lost the controller come back when their connection does, after libzmq's
    reconnect backoff (up to 5 s); a restarted controller that counted them down meanwhile
    would mark their slivers lost and move them. The restart grace waits for them."""
    r = Restartable(tmp_path / "c.db", restart_grace=10.0)
    agents = AgentsThread(r.c, nodes24[:6], state_dir=tmp_path / "agents")  # type: ignore[arg-type]
    try:
        with r.c.client() as c:
            wait_for(lambda: sum(n.state == "up" for n in c.call(ListNodes()).nodes) == 6, timeout=30, what="6 nodes up")
            c.call(CreateSlice(spec=spec("steady", 4)))
            wait_for(lambda: c.call(ShowSlice(name="steady")).state == "running", timeout=20, what="running")
        r.c.stop()
        wait_for(lambda: all(a.controller_lost for a in agents.agents), timeout=30, what="agents to find the controller silent")
        r.restart()
        down: set[str] = set()
        with r.c.client() as c:

            def back() -> bool:
                nodes = c.call(ListNodes()).nodes
                down.update(n.name for n in nodes if n.state != "up")
                return all(n.state == "up" for n in nodes) and all(a.registered and not a.controller_lost for a in agents.agents)

            wait_for(back, timeout=30, what="every agent registered again")
            assert not down, f"counted down while their agents backed off: {sorted(down)}"
            shown = c.call(ShowSlice(name="steady"))
            assert shown.state == "running" and all(not any(e.event in ("lost", "moved") for e in s.history) for s in shown.slivers)
    finally:
        agents.stop()
        r.c.stop()
