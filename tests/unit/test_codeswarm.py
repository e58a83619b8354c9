"""Where a pulled bundle comes from (controller/codeswarm.py): pure bookkeeping."""

from __future__ import annotations

from controller.codeswarm import ASKS_PER_SECOND, FINISH, WAIT, Route, Swarm

D = "d" * 64


def everyone(_: str) -> bool:
    return True


def consistent(s: Swarm) -> None:
    """Each send is indexed both ways, and no holder is listed with nothing to send."""
    assert {k: h for h, sends in s.sending.items() for k in sends} == s.fed_by
    assert all(s.sending.values()) and all(s.holders.values()) and all(s.direct.values()) and all(s.waiting.values())


def test_the_first_nodes_fetch_from_the_controller_the_rest_wait_then_go_to_holders() -> None:
    s = Swarm(slots=2, seeds=2)
    assert s.route(D, "a", 0, True, 0.0, everyone) == Route("direct")
    assert s.route(D, "b", 0, True, 0.0, everyone) == Route("direct")
    assert s.route(D, "c", 0, True, 0.0, everyone).kind == "wait"  # two fetch from the controller already
    assert s.route(D, "a", 524288, True, 0.1, everyone) == Route("direct")  # a fetch under way goes on
    s.held(D, "a")
    assert s.route(D, "c", 0, True, 0.2, everyone) == Route("peer", "a")
    assert s.route(D, "d", 0, True, 0.2, everyone) == Route("peer", "a")
    assert s.route(D, "e", 0, True, 0.2, everyone) == Route("direct")  # a's 2 slots are taken; a no longer fetches, so one of the controller's 2 places is free
    assert s.route(D, "f", 0, True, 0.2, everyone).kind == "wait"
    s.held(D, "c")  # c's slot on a is free again; c holds it too
    assert s.route(D, "f", 0, True, 0.3, everyone) in (Route("peer", "a"), Route("peer", "c"))
    assert s.peer_sends == 3
    consistent(s)


def test_a_node_that_cannot_listen_is_always_served_and_a_failed_peer_is_dropped() -> None:
    s = Swarm(slots=4, seeds=1)
    s.held(D, "a")
    assert s.route(D, "b", 0, True, 0.0, everyone) == Route("peer", "a")
    assert s.route(D, "b", 0, False, 1.0, everyone) == Route("direct")  # b asks without a port: a failed it
    assert D not in s.holders
    assert s.busy() == 0
    assert s.route(D, "c", 0, False, 1.0, everyone) == Route("direct")  # past the seed bound: no port, no waiting
    consistent(s)


def test_down_nodes_and_silent_fetches_free_their_places() -> None:
    s = Swarm(slots=1, seeds=1, stall=10.0)
    s.held(D, "a")
    s.held(D, "b")
    assert s.route(D, "c", 0, True, 0.0, lambda n: n != "a") == Route("peer", "b")  # a is down
    s.forget("b")  # b goes down mid-send: its slot and its holding go
    assert s.busy() == 0 and list(s.holders[D]) == ["a"]
    consistent(s)
    assert s.route(D, "c", 0, True, 0.0, everyone) == Route("peer", "a")
    s.forget("c")  # the fetching node goes down: a's slot is free again
    assert s.busy() == 0
    consistent(s)
    assert s.route(D, "x", 0, True, 0.0, lambda n: False) == Route("direct")
    assert s.route(D, "y", 0, True, 0.0, lambda n: False).kind == "wait"
    s.expire(11.0)  # x went silent
    assert s.route(D, "y", 0, True, 11.0, lambda n: False) == Route("direct")
    s.finishing(D, "y", 12.0)  # sent the last chunk: FINISH seconds to say it holds it
    s.expire(12.0 + FINISH - 1)
    assert "y" in s.direct[D]
    s.expire(12.0 + FINISH + 1)
    assert D not in s.direct
    consistent(s)


def test_a_holder_that_drops_the_bundle_is_not_named_again() -> None:
    s = Swarm()
    s.held(D, "a")
    s.dropped(D, "a")
    assert s.route(D, "b", 0, True, 0.0, everyone) == Route("direct")


def test_the_more_nodes_wait_the_less_often_each_asks() -> None:
    s = Swarm(seeds=1)
    assert s.route(D, "seed", 0, True, 0.0, everyone).kind == "direct"
    waits = [s.route(D, f"n{i}", 0, True, 0.0, everyone).wait for i in range(3000)]
    assert waits[0] == WAIT and waits[-1] == 3000 / ASKS_PER_SECOND  # 1,000 asks a second over all of them
    s.held(D, "seed")
    assert s.route(D, "n0", 0, True, 1.0, everyone) == Route("peer", "seed")
    assert "n0" not in s.waiting[D]
    s.forget("n1")
    assert "n1" not in s.waiting[D]
    consistent(s)
    s.expire(1000.0)  # those that stopped asking (their slice went) are not counted on
    assert D not in s.waiting and D not in s.direct
