"""``ping`` reports how long the controller's loop kept the users' socket unread
(controller/userwaits.py), measured on a real controller whose turns the test runs."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from benchmarks.common import slice_doc
from controller.server import Server
from slices import identity
from slices.codec import encode
from slices.protocol import CreateSlice, DeleteSlice, Message, Ok, Ping, Pong, result_of
from slices.transport import Dealer
from tests.conftest import answer, hand_run_server
from tests.inprocess import register_sim_nodes

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    with hand_run_server(tmp_path, heartbeat_period=60.0) as s:  # its nodes have no agents: kept up for the whole test
        yield s


def call(server: Server, user: Dealer, msg: Message, msg_id: str) -> Any:
    """Send ``msg`` on the users' socket, run the controller's turns until it answers."""
    user.send(encode(msg, id=msg_id, sender="t"))
    reply = answer(server, user)
    assert isinstance(reply, Ok), reply
    return result_of(msg, reply)


def test_ping_reports_the_wait_a_big_delete_caused(server: Server, tmp_path: Path) -> None:
    register_sim_nodes(server.cluster, 3000, time.time)
    user = Dealer(server.user_url, "user", identity.read(tmp_path / "keys" / "admin.identity.yaml").keys)
    try:
        quiet = call(server, user, Ping(), "p0")
        assert isinstance(quiet, Pong)
        call(server, user, CreateSlice(spec=slice_doc("big", 3000, distinct="none", cpu=0.01, memory="4Mi")), "c1")  # placed in steps
        handled: list[float] = []
        delete = server.table[DeleteSlice]

        def timed(msg: Any, c: Any) -> Any:  # the real handler, timed: a delete is applied at once
            t = time.perf_counter()
            try:
                return delete(msg, c)
            finally:
                handled.append(time.perf_counter() - t)

        server.table[DeleteSlice] = timed
        call(server, user, DeleteSlice(name="big"), "d1")
        pong = call(server, user, Ping(), "p1")
        assert len(handled) == 1
        took_ms = handled[0] * 1e3
        # The users' socket was not read while the delete ran: the longest wait covers it.
        assert pong.user_wait_max_ms >= took_ms - 0.1, (pong.user_wait_max_ms, took_ms)
        assert pong.user_wait_max_ms >= quiet.user_wait_max_ms
        assert pong.user_waits_over_50ms >= (1 if took_ms > 50 else 0)
        assert pong.user_waits_over_50ms >= quiet.user_waits_over_50ms
    finally:
        user.close()
