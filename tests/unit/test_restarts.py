"""Restart policies: parsing with field paths, backoff arithmetic, and the node's bookkeeping."""

from __future__ import annotations

from typing import Any

import pytest

from node_agent.restarts import RESET_AFTER, Restarts
from slices.errors import SpecError
from slices.model import Resources, RestartPolicy, SliverSpec, SliverStatus
from slices.spec import parse_spec

BASE: dict[str, Any] = {"name": "r", "description": "restarts", "resources": {"cpu": 0.1, "memory": "32Mi"}, "placement": {"count": 1}}


def spec(restart: RestartPolicy) -> SliverSpec:
    return SliverSpec(id="r-0", slice="r", isolation="container", image="busybox", resources=Resources(cpu=0.1, memory=32 << 20), restart=restart)


def status(state: str, reason: str | None = None) -> SliverStatus:
    return SliverStatus(id="r-0", state=state, reason=reason)


@pytest.mark.parametrize(
    ("value", "want"),
    [
        ("never", RestartPolicy(policy="never")),
        ("always", RestartPolicy(policy="always")),
        ({"policy": "on-failure", "attempts": 3, "backoff": "500ms", "max_backoff": "2s", "moves": 0}, RestartPolicy(attempts=3, backoff=0.5, max_backoff=2.0, moves=0)),
        ({"attempts": 1, "backoff": 2}, RestartPolicy(attempts=1, backoff=2.0)),
    ],
)
def test_restart_policies_parse(value: object, want: RestartPolicy) -> None:
    assert parse_spec({**BASE, "restart": value}).restart == want


@pytest.mark.parametrize(
    ("value", "path", "words"),
    [
        ("sometimes", "restart", "never, on-failure, always"),
        ({"policy": "on-failure", "tries": 2}, "restart.tries", "unknown"),
        ({"attempts": -1}, "restart.attempts", "0"),
        ({"attempts": 10**6}, "restart.attempts", "1000"),
        ({"backoff": "soon"}, "restart.backoff", "500ms, 5s"),
        ({"backoff": "10s", "max_backoff": "1s"}, "restart.max_backoff", "at least restart.backoff"),
        ([1, 2], "restart", "mapping"),
        ({"moves": 1000}, "restart.moves", "100"),
    ],
)
def test_bad_restart_policies_name_the_field(value: object, path: str, words: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_spec({**BASE, "restart": value})
    assert path in str(err.value) and words in str(err.value)


def test_on_node_failure_is_replace_or_keep() -> None:
    assert parse_spec(BASE).on_node_failure == "replace"
    assert parse_spec({**BASE, "on_node_failure": "keep"}).on_node_failure == "keep"
    with pytest.raises(SpecError, match="on_node_failure"):
        parse_spec({**BASE, "on_node_failure": "pray"})


def test_backoff_doubles_up_to_its_ceiling() -> None:
    p = RestartPolicy(backoff=1.0, max_backoff=5.0)
    assert [p.delay(n) for n in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert p.delay(10**6) == 5.0  # no overflow however many


def test_what_each_policy_restarts() -> None:
    assert RestartPolicy(policy="on-failure").wants_restart("failed")
    assert not RestartPolicy(policy="on-failure").wants_restart("exited")
    assert RestartPolicy(policy="always").wants_restart("exited")
    assert not RestartPolicy(policy="never").wants_restart("failed")


def test_a_failed_sliver_is_restarted_after_its_backoff_then_given_up() -> None:
    desired = {"r-0": spec(RestartPolicy(attempts=2, backoff=1.0, max_backoff=10.0))}
    r = Restarts()
    r.observe({"r-0": status("failed", "exited with code 3")}, desired, now=100.0)
    assert r.due_now(100.5) == [] and r.due_now(101.0) == ["r-0"]
    r.started("r-0")
    r.observe({"r-0": status("failed", "exited with code 3")}, desired, now=101.1)
    assert r.due_now(102.0) == [] and r.due_now(103.1) == ["r-0"], "the second wait is twice the first"
    r.started("r-0")
    r.observe({"r-0": status("failed", "exited with code 3")}, desired, now=103.2)
    assert r.due_now(10_000.0) == [], "two attempts spent"
    out = r.annotate({"r-0": status("failed", "exited with code 3")}, desired)["r-0"]
    assert out.gave_up and out.restarts == 2 and out.reason == "gave up after 2 restarts: exited with code 3"


def test_a_clean_exit_is_not_a_failure_unless_always() -> None:
    r = Restarts()
    on_failure = {"r-0": spec(RestartPolicy())}
    r.observe({"r-0": status("exited", "exited with code 0")}, on_failure, now=0.0)
    assert r.due_now(1e9) == []
    assert not r.annotate({"r-0": status("exited")}, on_failure)["r-0"].gave_up
    always = {"r-0": spec(RestartPolicy(policy="always", backoff=0.5))}
    r.observe({"r-0": status("exited", "exited with code 0")}, always, now=0.0)
    assert r.due_now(0.5) == ["r-0"]


def test_a_long_run_forgives_earlier_failures() -> None:
    desired = {"r-0": spec(RestartPolicy(attempts=1))}
    r = Restarts({"r-0": 1})
    assert not r.observe({"r-0": status("running")}, desired, now=0.0)
    assert not r.observe({"r-0": status("running")}, desired, now=RESET_AFTER - 1)
    assert r.observe({"r-0": status("running")}, desired, now=RESET_AFTER), "the count was reset"
    assert r.counts["r-0"] == 0
    r.observe({"r-0": status("failed")}, desired, now=RESET_AFTER + 1)
    assert r.due_now(RESET_AFTER + 100) == ["r-0"], "one attempt available again"


def test_a_sliver_no_longer_desired_is_forgotten() -> None:
    desired = {"r-0": spec(RestartPolicy())}
    r = Restarts({"r-0": 3})
    r.observe({"r-0": status("failed")}, desired, now=0.0)
    assert r.observe({}, {}, now=1.0), "its count is dropped, so the saved counts change"
    assert r.counts == {} and r.due_now(1e9) == []
