"""slices/model.py wire records and node_agent/reconciler.py diffs."""

from __future__ import annotations

import copy
from typing import Any

import msgpack
import pytest

from node_agent.reconciler import Actions, diff
from slices.errors import ProtocolError
from slices.model import Location, NodeInfo, Resources, SliverSpec, SliverStatus, Usage

Gi = 1024**3


def node_info(**kw: Any) -> NodeInfo:
    base: dict[str, Any] = dict(
        name="princeton-0",
        site="princeton",
        location=Location(city="Princeton", country="US", region="north-america", lat=40.3431, lon=-74.6551),
        capacity=Resources(cpu=8.0, memory=16 * Gi, disk=500 * Gi),
        reserve=Resources(cpu=1.0, memory=Gi // 2, disk=Gi),
        offers={"container": "sim", "vm": "sim"},
        images=("alpine", "busybox"),
        labels={"rack": "r1"},
        overbook=1.5,
    )
    base.update(kw)
    return NodeInfo(**base)


def wire_roundtrip(doc: dict[str, Any]) -> Any:
    """Through msgpack, as it travels."""
    return msgpack.unpackb(msgpack.packb(doc, use_bin_type=True), raw=False)


# ---- NodeInfo -----------------------------------------------------------------------------


def test_node_info_round_trip() -> None:
    info = node_info()
    assert NodeInfo.from_wire(info.to_wire()) == info
    assert NodeInfo.from_wire(wire_roundtrip(info.to_wire())) == info


def test_node_info_defaults() -> None:
    wire = node_info().to_wire()
    for key in ("reserve", "images", "labels", "overbook"):
        del wire[key]
    info = NodeInfo.from_wire(wire)
    assert info.reserve == Resources(0, 0, 0)
    assert info.images == ()
    assert info.labels == {}
    assert info.overbook == 1.0


def test_node_info_to_wire_is_plain_data() -> None:
    wire = node_info().to_wire()
    assert wire["location"] == {"city": "Princeton", "country": "US", "region": "north-america", "lat": 40.3431, "lon": -74.6551}
    assert wire["images"] == ["alpine", "busybox"]
    assert msgpack.packb(wire)  # serialisable


def test_node_info_from_wire_does_not_mutate_input() -> None:
    wire = node_info().to_wire()
    before = copy.deepcopy(wire)
    NodeInfo.from_wire(wire)
    assert wire == before


def broken(path: str, value: Any) -> dict[str, Any]:
    wire = node_info().to_wire()
    target = wire
    *parents, last = path.split(".")
    for p in parents:
        target = target[p]
    if value is ...:
        del target[last]
    else:
        target[last] = value
    return wire


@pytest.mark.parametrize(
    "wire",
    [
        None,
        [],
        "node",
        broken("name", ...),
        broken("site", ...),
        broken("location", ...),
        broken("location", "Princeton"),
        broken("location.lat", ...),
        broken("capacity", ...),
        broken("capacity", [8, 16, 500]),
        broken("capacity.cpu", -1),
        broken("capacity.memory", "16Gi"),
        broken("capacity.disk", -1),
        broken("capacity.memory", float("inf")),
        broken("reserve.cpu", "one"),
        broken("offers", ...),
        broken("offers", {}),
        broken("offers", 5),
        broken("overbook", 0),
        broken("overbook", -1.0),
        broken("overbook", "lots"),
        broken("labels", 3),
    ],
)
def test_node_info_malformed(wire: object) -> None:
    with pytest.raises(ProtocolError):
        NodeInfo.from_wire(wire)


@pytest.mark.parametrize(("field", "value"), [("lat", "north"), ("lon", None), ("lat", [1, 2])])
def test_node_info_non_numeric_coordinates_are_malformed(field: str, value: object) -> None:
    """An agent announcing lat "north" must be refused at registration.

    Accepted, it reaches the controller's placement index, whose float arrays cannot hold it,
    and every later placement on that controller fails.
    """
    with pytest.raises(ProtocolError):
        NodeInfo.from_wire(broken(f"location.{field}", value))


# ---- SliverSpec ---------------------------------------------------------------------------


def sliver(**kw: Any) -> SliverSpec:
    base: dict[str, Any] = dict(
        id="cdn-probe-0",
        slice="cdn-probe",
        isolation="container",
        image="busybox",
        resources=Resources(cpu=0.5, memory=256 * 1024**2, disk=Gi, bandwidth=10_000_000),
        command=("sh", "-c", "sleep 5"),
        env={"MODE": "probe"},
    )
    base.update(kw)
    return SliverSpec(**base)


@pytest.mark.parametrize("spec", [sliver(), sliver(command=None, env={}, resources=Resources(cpu=0.5, memory=1 << 20))])
def test_sliver_spec_round_trip(spec: SliverSpec) -> None:
    wire = spec.to_wire()
    assert wire["command"] is None or isinstance(wire["command"], list)
    assert SliverSpec.from_wire(wire) == spec
    assert SliverSpec.from_wire(wire_roundtrip(wire)) == spec  # lists come back as tuples


def test_sliver_spec_ignores_unknown_fields_and_fills_defaults() -> None:
    spec = SliverSpec.from_wire({"id": "a", "slice": "s", "isolation": "vm", "image": "busybox", "resources": {"cpu": 1, "memory": 1024}, "future": True})
    assert spec == SliverSpec(id="a", slice="s", isolation="vm", image="busybox", resources=Resources(cpu=1, memory=1024))
    assert spec.env == {} and spec.command is None


@pytest.mark.parametrize("wire", [None, [], "x", {"id": "a"}, {"slice": "s", "isolation": "vm", "image": "b", "resources": {"cpu": 1, "memory": 1}}])
def test_sliver_spec_malformed(wire: object) -> None:
    with pytest.raises(ProtocolError):
        SliverSpec.from_wire(wire)


@pytest.mark.parametrize("env", [5, "A=1", [1, 2, 3]])
def test_sliver_spec_env_not_a_map_is_a_protocol_error(env: object) -> None:
    """The agent drops a malformed desired set only on ProtocolError (node_agent/agent.py _on_desired)."""
    wire = sliver().to_wire()
    wire["env"] = env
    with pytest.raises(ProtocolError):
        SliverSpec.from_wire(wire)


def test_sliver_spec_command_string_is_not_split_into_characters() -> None:
    wire = sliver().to_wire()
    wire["command"] = "sleep 5"
    try:
        spec = SliverSpec.from_wire(wire)
    except ProtocolError:
        return  # refusing it is fine
    assert spec.command != tuple("sleep 5"), f"command became {spec.command!r}"


# ---- Usage and SliverStatus ---------------------------------------------------------------


def test_usage_round_trip_and_defaults() -> None:
    u = Usage(cpu_seconds=12.5, cpu_cores=0.4, memory=100, memory_peak=200, oom_kills=1, pids=7, net_rx=10, net_tx=20)
    assert Usage.from_wire(u.to_wire()) == u
    assert Usage.from_wire({}) == Usage()
    assert Usage.from_wire({"memory": 5, "gpu": 1}) == Usage(memory=5)


def test_usage_total_is_the_sum_of_each_field() -> None:
    a = Usage(cpu_seconds=1.5, cpu_cores=0.5, memory=10, memory_peak=12, oom_kills=0, pids=3, net_rx=5, net_tx=6)
    b = Usage(cpu_seconds=2.0, cpu_cores=0.25, memory=1, memory_peak=2, oom_kills=1, pids=1, net_rx=1, net_tx=1)
    assert Usage.total([a, b]) == Usage(3.5, 0.75, 11, 14, 1, 4, 6, 7)
    assert Usage.total(iter([a])) == a
    assert Usage.total([]) == Usage()


@pytest.mark.parametrize("wire", [None, [], 3, "usage"])
def test_usage_malformed(wire: object) -> None:
    with pytest.raises(ProtocolError):
        Usage.from_wire(wire)


@pytest.mark.parametrize(
    "status",
    [
        SliverStatus(id="a", state="running"),
        SliverStatus(id="a", state="failed", reason="oom-killed", usage=Usage(memory=5, oom_kills=1)),
        SliverStatus(id="b", state="lost", reason="node rebooted"),
        SliverStatus(id="c", state="pending"),
        SliverStatus(id="d", state="stopped", reason="expired"),
    ],
)
def test_sliver_status_round_trip(status: SliverStatus) -> None:
    assert SliverStatus.from_wire(status.to_wire()) == status
    assert SliverStatus.from_wire(wire_roundtrip(status.to_wire())) == status


@pytest.mark.parametrize(
    "wire",
    [
        None,
        [],
        {},
        {"id": 5, "state": "running"},
        {"state": "running"},
        {"id": "a"},
        {"id": "a", "state": "exploded"},
        {"id": "a", "state": "running", "usage": [1]},
        {"id": "a", "state": "running", "usage": "lots"},
    ],
)
def test_sliver_status_malformed(wire: object) -> None:
    with pytest.raises(ProtocolError):
        SliverStatus.from_wire(wire)


def test_sliver_status_reason_must_be_a_string() -> None:
    with pytest.raises(ProtocolError, match=r"sliver status.reason: must be a string"):
        SliverStatus.from_wire({"id": "a", "state": "failed", "reason": 137})


# ---- reconciler ---------------------------------------------------------------------------


def want(*ids: str) -> dict[str, SliverSpec]:
    return {i: sliver(id=i) for i in ids}


def have(**states: str) -> dict[str, SliverStatus]:
    return {i: SliverStatus(id=i, state=s) for i, s in states.items()}


def test_diff_creates_missing() -> None:
    acts = diff(want("b", "a"), {})
    assert [s.id for s in acts.create] == ["a", "b"]  # sorted: deterministic
    assert acts.destroy == ()
    assert acts


def test_diff_destroys_undesired() -> None:
    acts = diff({}, have(x="running", y="failed", z="lost"))
    assert acts.create == ()
    assert acts.destroy == ("x", "y", "z")


def test_diff_keeps_running_and_pending() -> None:
    acts = diff(want("a", "b"), have(a="running", b="pending"))
    assert acts == Actions(create=(), destroy=())
    assert not acts


def test_diff_does_not_recreate_failed() -> None:
    acts = diff(want("a"), have(a="failed"))
    assert acts.create == () and acts.destroy == ()


def test_diff_recreates_lost() -> None:
    acts = diff(want("a", "b"), have(a="lost", b="running"))
    assert [s.id for s in acts.create] == ["a"]
    assert acts.destroy == ()


def test_diff_mixed() -> None:
    acts = diff(want("keep", "new", "lost", "failed"), have(keep="running", lost="lost", failed="failed", old="running"))
    assert [s.id for s in acts.create] == ["lost", "new"]
    assert acts.destroy == ("old",)
    assert acts.create[1] == want("new")["new"]  # the desired spec itself is handed on


def test_diff_is_pure() -> None:
    desired, actual = want("a"), have(b="running")
    d0, a0 = dict(desired), dict(actual)
    assert diff(desired, actual) == diff(desired, actual)
    assert desired == d0 and actual == a0
