"""slices/codec.py and slices/protocol: the envelope never trusts the bytes."""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

import msgpack
import pytest

from slices import protocol as m
from slices.codec import DEFAULT_MAX_BYTES, BadBody, Envelope, VersionMismatch, decode, encode, new_id
from slices.errors import ProtocolError
from slices.model import Location, NodeInfo, Resources, SliverSpec, SliverStatus, Usage
from slices.transport import new_keypair
from slices.wire import to_wire

NODE = NodeInfo(
    name="n1",
    site="princeton",
    location=Location("Princeton", "US", "north-america", 40.35, -74.66),
    capacity=Resources(4.0, 8 << 30, 100 << 30),
    offers={"container": "runc"},
)
SLIVER = SliverSpec(id="a-0123abcd", slice="a", isolation="container", image="busybox", resources=Resources(0.5, 256 << 20, 1 << 30, 10_000_000), command=("sh", "-c", "echo hi\nexit 0"), env={"K": "v"})
KEY = new_keypair().public
STATUS = SliverStatus("a-0123abcd", "running", None, Usage(cpu_seconds=1.5, memory=1 << 20))

#: One sample per registered type: a new type must be added here (a test checks).
SAMPLES: dict[str, m.Message] = {
    "ok": m.Ok({"slices": [{"name": "a", "state": "running"}], "n": 3}),
    "error": m.Error(code="not-found", reason="no slice 'x'", details={"plan": [1, 2]}),
    "register": m.Register(node=NODE, slivers=[STATUS], generation=7),
    "heartbeat": m.Heartbeat(node="n1", generation=3, slivers=[SliverStatus("x", "lost", "gone")], usage=Usage(cpu_seconds=1.5)),
    "pulse": m.Pulse(node="n1", generation=3, slivers=[SliverStatus("x", "running", usage=Usage(cpu_seconds=0.5))], usage=Usage(cpu_seconds=1.5)),
    "report": m.Report(node="n1", generation=4, slivers=[]),
    "desired": m.Desired(generation=9, slivers=[SLIVER]),
    "create_slice": m.CreateSlice(spec={"name": "a", "description": "d", "placement": {"count": 2}}),
    "plan_slice": m.PlanSlice(spec={"name": "a", "description": "d"}),
    "list_slices": m.ListSlices(limit=10, after="a"),
    "show_slice": m.ShowSlice(name="cdn-probe"),
    "delete_slice": m.DeleteSlice(name="cdn-probe"),
    "renew_slice": m.RenewSlice(name="cdn-probe", seconds=7 * 86400),
    "migrate_slice": m.MigrateSlice(slice="cdn-probe", sliver="cdn-probe-0a1b2c3d", to="princeton-1"),
    "upload_code": m.UploadCode(digest="a" * 64, size=10, offset=0, data=b"0123456789"),
    "fetch_code": m.FetchCode(node="princeton-1", digest="a" * 64, offset=0, port=40123, token="c" * 32),
    "push_code": m.PushCode(digest="a" * 64, offset=0, size=3, data=b"abc"),
    "code_ack": m.CodeAck(node="princeton-1", digest="a" * 64, have=3, held=True),
    "send_code": m.SendCode(digest="a" * 64, size=3, to="mit-1", endpoint="10.0.0.7:40123", token="c" * 32),
    "list_nodes": m.ListNodes(),
    "list_sites": m.ListSites(),
    "list_slivers": m.ListSlivers(),
    "ping": m.Ping(),
    "exec_sliver": m.ExecSliver(slice="a", argv=["sh", "-c", "echo 'a\tb'"], node="n1", timeout=5.0, stdin=True, tty=True, rows=50, cols=132),
    "sliver_logs": m.SliverLogs(slice="a", node=None, offset=10, limit=100),
    "node_exec": m.NodeExec(sliver="a-0123abcd", argv=["true"], timeout=1.0),
    "node_logs": m.NodeLogs(sliver="a-0123abcd", offset=None, limit=65536),
    "exec_output": m.ExecOutput(request="abc", stream="stderr", data=b"\x00\xff"),
    "exec_input": m.ExecInput(request="abc", data=b"\x03\x04", eof=True),
    "exec_resize": m.ExecResize(request="abc", rows=50, cols=132),
    "list_keys": m.ListKeys(),
    "accept_key": m.AcceptKey(name="n1"),
    "reject_key": m.RejectKey(name="n1"),
    "revoke_key": m.RevokeKey(name="alice", kind="user"),
    "trust_keys": m.TrustKeys(agents={"n1": KEY}),
    "make_token": m.MakeToken(node="n1", ttl=60.0),
    "add_user": m.AddUser(name="alice", site="princeton", role="pi", key=KEY),
    "remove_user": m.RemoveUser(name="alice"),
    "list_users": m.ListUsers(),
    "set_site": m.SetSite(name="princeton", max_slices=3, max_memory=1 << 30),
    "remove_site": m.RemoveSite(name="princeton"),
    "list_policies": m.ListPolicies(),
    "list_audit": m.ListAudit(limit=10, before=99),
    "orphans": m.Orphans(action="adopt", node="n1"),
    "wait_slice": m.WaitSlice(name="a", until="deleted", seen=3, timeout=1.5),
    "goodbye": m.Goodbye(node="n1", reason="upgrade"),
    "node_admin": m.NodeAdmin(name="n1", action="drain"),
    "wait_progress": m.WaitProgress(request="abc", progress=m.Progress(name="a", state="pending", running=1, wanted=4, placed=4, version=9)),
}


def frame(**doc: Any) -> bytes:
    base: dict[str, Any] = {"v": m.PROTOCOL_VERSION, "type": "ping", "id": "abc123", "from": "cli-test", "ts": 1764086400.0, "body": {}}
    base.update(doc)
    packed: bytes = msgpack.packb({k: v for k, v in base.items() if v is not ...}, use_bin_type=True)
    return packed


def test_every_registered_type_has_a_sample() -> None:
    assert set(SAMPLES) == set(m.REGISTRY)
    for name, msg in SAMPLES.items():
        assert m.REGISTRY[name] is type(msg)


def test_every_request_names_a_reply_record() -> None:
    for cls in m.REGISTRY.values():
        assert (cls.REPLY is not None) == cls.REQUEST, cls.TYPE


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_round_trip(name: str) -> None:
    msg = SAMPLES[name]
    env = decode(encode(msg, id="req-1", sender="agent-n1"))
    assert isinstance(env, Envelope)
    assert env.msg == msg
    assert type(env.msg) is type(msg)
    assert (env.id, env.sender, env.version, env.type) == ("req-1", "agent-n1", m.PROTOCOL_VERSION, name)
    assert env.ts > 1.6e9


def test_nested_records_arrive_typed() -> None:
    reg = decode(encode(SAMPLES["register"], id="r", sender="s")).msg
    assert isinstance(reg, m.Register)
    assert isinstance(reg.node.location, Location) and reg.node.capacity.cpu == 4.0
    assert isinstance(reg.slivers[0], SliverStatus) and isinstance(reg.slivers[0].usage, Usage)
    desired = decode(encode(SAMPLES["desired"], id="r", sender="s")).msg
    assert isinstance(desired, m.Desired) and desired.slivers[0].resources == SLIVER.resources
    assert desired.slivers[0].command == ("sh", "-c", "echo hi\nexit 0"), "argv keeps its newline: data, not a name"


def test_replies_decode_to_the_requests_record() -> None:
    view = m.Pong(version="0.1", protocol="2.0", nodes=3, slices=1)
    assert m.result_of(m.Ping(), m.Ok(to_wire(view))) == view
    with pytest.raises(ProtocolError, match=r"ping reply.nodes"):
        m.result_of(m.Ping(), m.Ok({"version": "0.1", "protocol": "2.0", "nodes": -1}))


def test_defaults_fill_missing_optional_fields() -> None:
    env = decode(frame(type="list_slices", body={}))
    assert env.msg == m.ListSlices(limit=None, after=None)
    assert decode(frame(type="heartbeat", body={"node": "n", "generation": 0})).msg == m.Heartbeat(node="n", generation=0)


def test_body_may_be_absent_for_bodyless_types() -> None:
    assert decode(frame(type="ping", body=...)).msg == m.Ping()


def test_new_id_is_unique_hex() -> None:
    ids = {new_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(len(i) == 16 and int(i, 16) >= 0 for i in ids)


def test_random_bytes_are_protocol_errors() -> None:
    rng = random.Random(1234)
    for _ in range(500):
        data = rng.randbytes(rng.randint(0, 200))
        with pytest.raises(ProtocolError):
            decode(data)


def test_random_bytes_after_a_map_header_are_protocol_errors() -> None:
    rng = random.Random(4321)
    for _ in range(200):
        data = bytes([0x80 | rng.randint(0, 15)]) + rng.randbytes(rng.randint(0, 60))
        with pytest.raises(ProtocolError):
            decode(data)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_every_truncation_of_a_valid_frame_is_refused(name: str) -> None:
    data = encode(SAMPLES[name], id="r", sender="s")
    for cut in range(len(data)):
        with pytest.raises(ProtocolError):
            decode(data[:cut])


def test_oversized_frame() -> None:
    big = encode(m.Ok({"blob": "x" * DEFAULT_MAX_BYTES}), id="r", sender="s")
    with pytest.raises(ProtocolError, match=r"over the 1048576-byte cap"):
        decode(big)
    small = encode(m.ShowSlice("a"), id="r", sender="s")
    with pytest.raises(ProtocolError, match=r"cap"):
        decode(small, max_bytes=len(small) - 1)
    assert decode(small, max_bytes=len(small)).msg == m.ShowSlice("a")


@pytest.mark.parametrize("doc", [[1, 2, 3], "ping", 42, None, True, b"bytes", 1.5])
def test_non_map_envelope(doc: object) -> None:
    with pytest.raises(ProtocolError, match=r"not a map"):
        decode(msgpack.packb(doc, use_bin_type=True))


def test_non_string_map_keys_are_refused() -> None:
    with pytest.raises(ProtocolError):
        decode(msgpack.packb({1: "x"}, use_bin_type=True))


@pytest.mark.parametrize(
    ("doc", "phrase"),
    [
        ({"v": ...}, "version"),
        ({"v": "2"}, "version"),
        ({"v": "two.zero"}, "version"),
        ({"v": True}, "version"),
        ({"v": 2.0}, "version"),
        ({"type": ...}, "type or id"),
        ({"type": 5}, "type or id"),
        ({"id": ...}, "type or id"),
        ({"id": ""}, "type or id"),
        ({"id": 17}, "type or id"),
        ({"id": "x" * 65}, "type or id"),
        ({"from": ...}, "sender"),
        ({"from": 3}, "sender"),
        ({"from": "s" * 257}, "sender"),
        ({"ts": ...}, "timestamp"),
        ({"ts": "now"}, "timestamp"),
    ],
)
def test_missing_or_bad_envelope_fields(doc: dict[str, Any], phrase: str) -> None:
    with pytest.raises(ProtocolError, match=phrase):
        decode(frame(**doc))


def test_unknown_type() -> None:
    with pytest.raises(ProtocolError, match=r"unknown message type 'launch_missiles'"):
        decode(frame(type="launch_missiles"))


@pytest.mark.parametrize("body", [[], "x", 5, None])
def test_body_not_a_map(body: object) -> None:
    with pytest.raises(BadBody, match=r"must be a map"):
        decode(frame(type="show_slice", body=body))


@pytest.mark.parametrize(
    ("type_name", "body", "path"),
    [
        ("show_slice", {}, "show_slice.name: required"),
        ("error", {"code": "x"}, "error.reason: required"),
        ("heartbeat", {"node": "n"}, "heartbeat.generation: required"),
        ("renew_slice", {"name": "a"}, "renew_slice.seconds: required"),
        ("register", {}, "register.node: required"),
        ("desired", {}, "desired.generation: required"),
        ("register", {"node": {**to_wire(NODE), "location": {"city": "x"}}}, "register.node.location.country: required"),
    ],
)
def test_missing_required_field(type_name: str, body: dict[str, Any], path: str) -> None:
    with pytest.raises(BadBody) as err:
        decode(frame(type=type_name, id="req-9", body=body))
    assert str(err.value) == path
    assert (err.value.msg_id, err.value.type_name) == ("req-9", type_name)


@pytest.mark.parametrize(
    ("type_name", "body", "path"),
    [
        ("show_slice", {"name": 5}, "show_slice.name"),
        ("show_slice", {"name": None}, "show_slice.name"),
        ("heartbeat", {"node": "n", "generation": "x"}, "heartbeat.generation"),
        ("heartbeat", {"node": "n", "generation": True}, "heartbeat.generation"),
        ("heartbeat", {"node": "n", "generation": 1.0}, "heartbeat.generation"),
        ("heartbeat", {"node": "n", "generation": -1}, "heartbeat.generation"),
        ("heartbeat", {"node": "n", "generation": 1, "slivers": {}}, "heartbeat.slivers"),
        ("heartbeat", {"node": "n", "generation": 1, "slivers": [{"id": "x", "state": "exploded"}]}, "heartbeat.slivers[0].state"),
        ("heartbeat", {"node": "n", "generation": 1, "usage": []}, "heartbeat.usage"),
        ("heartbeat", {"node": "n", "generation": 1, "usage": {"cpu_cores": float("nan")}}, "heartbeat.usage.cpu_cores"),
        ("heartbeat", {"node": "../../etc/passwd", "generation": 1}, "heartbeat.node"),
        ("heartbeat", {"node": "n\x1b[2J", "generation": 1}, "heartbeat.node"),
        ("renew_slice", {"name": "a", "seconds": True}, "renew_slice.seconds"),
        ("renew_slice", {"name": "a", "seconds": 1.5}, "renew_slice.seconds"),
        ("migrate_slice", {"slice": "a", "to": "../etc"}, "migrate_slice.to"),
        ("migrate_slice", {"slice": "a", "options": {"downtime_ms": 0}}, "migrate_slice.options.downtime_ms"),
        ("create_slice", {"spec": "name: a"}, "create_slice.spec"),
        ("register", {"node": [], "generation": 0}, "register.node"),
        ("register", {"node": {**to_wire(NODE), "capacity": {"cpu": float("inf")}}}, "register.node.capacity.cpu"),
        ("register", {"node": {**to_wire(NODE), "overbook": float("nan")}}, "register.node.overbook"),
        ("register", {"node": {**to_wire(NODE), "overbook": "2"}}, "register.node.overbook"),
        ("register", {"node": {**to_wire(NODE), "name": ""}}, "register.node.name"),
        ("register", {"node": {**to_wire(NODE), "offers": {}}}, "register.node.offers"),
        ("register", {"node": {**to_wire(NODE), "offers": {"unikernel": "x"}}}, "register.node.offers"),
        ("register", {"node": {**to_wire(NODE), "location": {**to_wire(NODE.location), "region": "mars"}}}, "register.node.location.region"),
        ("register", {"node": {**to_wire(NODE), "location": {**to_wire(NODE.location), "country": "XX"}}}, "register.node.location.country"),
        ("desired", {"generation": 1, "slivers": [{**to_wire(SLIVER), "env": {"BAD KEY": "v"}}]}, "desired.slivers[0].env"),
        ("desired", {"generation": 1, "slivers": [{**to_wire(SLIVER), "command": ["a\x00b"]}]}, "desired.slivers[0].command[0]"),
        ("ok", {"result": [1]}, "ok.result"),
        ("error", {"code": 1, "reason": "r"}, "error.code"),
        ("exec_output", {"request": "r", "stream": "stdin", "data": b""}, "exec_output.stream"),
        ("exec_resize", {"request": "r", "rows": 0, "cols": 80}, "exec_resize.rows"),
        ("exec_input", {"request": "r", "data": b"x" * (64 * 1024 + 1)}, "exec_input.data"),
        ("add_user", {"name": "Alice!", "site": "s", "key": KEY}, "add_user.name"),
        ("add_user", {"name": "alice", "site": "s", "key": "short"}, "add_user.key"),
        ("add_user", {"name": "alice", "site": "s", "role": "root", "key": KEY}, "add_user.role"),
        ("trust_keys", {"agents": {"../x": KEY}}, "trust_keys.agents"),
    ],
)
def test_wrong_or_unbounded_field(type_name: str, body: dict[str, Any], path: str) -> None:
    with pytest.raises(BadBody) as err:
        decode(frame(type=type_name, body=body))
    assert str(err.value).startswith(path + ":"), str(err.value)


def test_free_text_from_a_peer_is_defanged_not_refused() -> None:
    body = {"node": "n", "generation": 1, "slivers": [{"id": "x", "state": "failed", "reason": "boom\x1b[31m\nred"}]}
    msg = decode(frame(type="heartbeat", body=body)).msg
    assert isinstance(msg, m.Heartbeat)
    assert msg.slivers[0].reason == "boom?[31m?red"


def test_extra_unknown_body_fields_are_ignored() -> None:
    env = decode(frame(type="show_slice", body={"name": "a", "colour": "blue", "future_field": [1, 2]}))
    assert env.msg == m.ShowSlice(name="a")
    env = decode(frame(type="ping", body={"anything": 1}))
    assert env.msg == m.Ping()


def test_extra_envelope_keys_are_ignored() -> None:
    assert decode(frame(type="show_slice", body={"name": "a"}, trace="t-1")).msg == m.ShowSlice("a")


def test_a_newer_minor_is_accepted() -> None:
    env = decode(frame(v=f"{m.PROTOCOL_MAJOR}.{m.PROTOCOL_MINOR + 7}", type="show_slice", body={"name": "a", "new_in_minor_7": True}))
    assert env.msg == m.ShowSlice("a")
    assert env.version == f"{m.PROTOCOL_MAJOR}.{m.PROTOCOL_MINOR + 7}"


@pytest.mark.parametrize("version", [1, 0, "1.9", "3.0", "99.1"])
def test_another_major_names_both_versions_and_keeps_the_id(version: Any) -> None:
    data = encode(m.Ping(), id="req-42", sender="agent-x", version=version)
    with pytest.raises(VersionMismatch) as err:
        decode(data)
    exc = err.value
    assert isinstance(exc, ProtocolError)
    assert exc.code == "version-mismatch"
    assert f"protocol {version}," in str(exc) and f"speaks {m.PROTOCOL_VERSION}" in str(exc)
    assert exc.msg_id == "req-42"
    assert exc.type_name == "ping"


def test_version_mismatch_is_reported_even_for_unknown_types() -> None:
    # a peer of another major may use types this side does not know: the version is the reason
    with pytest.raises(VersionMismatch):
        decode(frame(v="3.0", type="brand_new_type", body={"x": 1}))


def test_registry_refuses_duplicate_types_and_requests_without_replies() -> None:
    with pytest.raises(ValueError):
        m.message(m.Ping)


def test_build_and_body_of_are_inverse() -> None:
    for name, msg in SAMPLES.items():
        assert m.build(name, m.body_of(msg)) == msg


def test_requests_and_notices() -> None:
    notices = {name for name, cls in m.REGISTRY.items() if not cls.REQUEST}
    assert notices == {"ok", "error", "report", "desired", "exec_output", "exec_input", "exec_resize", "wait_progress", "goodbye", "pulse", "push_code", "code_ack", "send_code"}


def test_rows_packed_ahead_encode_as_the_list_they_stand_for() -> None:
    """codec.Packed: a reply whose rows were packed a chunk at a time is byte for byte the
    reply packed in one go, and decodes to the same records (the client never knows)."""
    from slices.codec import Packed

    statuses = [SliverStatus(f"s-{i:04d}", "running", None, Usage(cpu_seconds=i * 0.5, memory=i << 20, pids=i)) for i in range(600)]
    ahead = Packed()
    for st in statuses:
        ahead.append(st)
    whole = m.Report(node="n1", generation=3, slivers=statuses)
    spliced = m.Report(node="n1", generation=3, slivers=ahead)  # type: ignore[arg-type]
    a, b = encode(whole, id="x", sender="s"), encode(spliced, id="x", sender="s")
    assert msgpack.unpackb(a) | {"ts": 0} == msgpack.unpackb(b) | {"ts": 0}
    assert decode(b).msg == whole
    empty = m.Report(node="n1", generation=3, slivers=Packed())  # type: ignore[arg-type]
    assert decode(encode(empty, id="y", sender="s")).msg == m.Report(node="n1", generation=3, slivers=[])


def test_records_kept_packed_are_packed_once_per_object_and_as_encode_packs_them() -> None:
    """codec.KeptPacked (a sliver's spec at every push of its node's set): the same object
    gives the same bytes without packing again, an equal other object is packed for itself,
    the cache drops everything at its bound, and a desired set made of kept bytes decodes to
    the set made of the records."""
    from slices.codec import KeptPacked, Packed, pack_record

    specs = [replace(SLIVER, id=f"a-{i:08x}") for i in range(3)]
    kept = KeptPacked(most=2)
    first = kept(specs[0])
    assert first == pack_record(specs[0]) and kept(specs[0]) is first
    twin = replace(SLIVER, id=specs[0].id)
    assert kept(twin) == first and kept(twin) is not first  # equal, another object: its own bytes
    kept(specs[1])  # the third kept: the bound drops the rest first
    assert len(kept.kept) == 1 and kept(specs[0]) == first
    packed = Packed()
    for spec in specs:
        packed.append(kept(spec))
    want = m.Desired(generation=4, slivers=specs)
    got = decode(encode(m.Desired(generation=4, slivers=packed), id="d", sender="s")).msg  # type: ignore[arg-type]
    assert got == want
