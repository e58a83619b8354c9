"""slices/codec.py and slices/messages.py: the envelope never trusts the bytes."""

from __future__ import annotations

import dataclasses
import random
import types
import typing
from typing import Any

import msgpack
import pytest

from slices import messages as m
from slices.codec import DEFAULT_MAX_BYTES, Envelope, VersionMismatch, decode, encode, new_id
from slices.errors import ProtocolError

SAMPLES: dict[str, m.Message] = {
    "ok": m.Ok({"slices": [{"name": "a", "state": "running"}], "n": 3}),
    "error": m.Error(code="not-found", reason="no slice 'x'"),
    "register": m.Register(node={"name": "n1", "site": "s", "capacity": {"cpu": 4}}, slivers=[{"id": "x", "state": "running"}], generation=7),
    "heartbeat": m.Heartbeat(node="n1", generation=3, slivers=[{"id": "x", "state": "lost", "reason": "gone"}], usage={"cpu_seconds": 1.5}),
    "report": m.Report(node="n1", generation=4, slivers=[]),
    "desired": m.Desired(generation=9, slivers=[{"id": "s1", "slice": "a", "cpu": 0.5}]),
    "create_slice": m.CreateSlice(spec={"name": "a", "description": "d", "placement": {"count": 2}}, dry_run=True, owner="alice"),
    "list_slices": m.ListSlices(),
    "show_slice": m.ShowSlice(name="cdn-probe"),
    "delete_slice": m.DeleteSlice(name="cdn-probe"),
    "renew_slice": m.RenewSlice(name="cdn-probe", seconds=7 * 86400),
    "list_nodes": m.ListNodes(),
    "list_sites": m.ListSites(),
    "ping": m.Ping(),
}


def sample_value(hint: Any) -> Any:
    """A non-default value of a field's type, for message types added after these tests."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        return sample_value(args[0])
    base = typing.get_origin(hint) or hint
    values: dict[Any, Any] = {str: "sample", int: 7, float: 2.5, bool: True, bytes: b"\x00\xffdata", dict: {"k": [1, "v"]}, list: [1, "two", {"three": 3}]}
    return values.get(base, {"any": 1})


def sample(cls: type[m.Message]) -> m.Message:
    if cls.TYPE in SAMPLES:
        return SAMPLES[cls.TYPE]
    hints = typing.get_type_hints(cls)
    return cls(**{f.name: sample_value(hints[f.name]) for f in dataclasses.fields(cls)})


def frame(**doc: Any) -> bytes:
    base: dict[str, Any] = {"v": m.PROTOCOL_VERSION, "type": "ping", "id": "abc123", "from": "cli-test", "ts": 1764086400.0, "body": {}}
    base.update(doc)
    packed: bytes = msgpack.packb({k: v for k, v in base.items() if v is not ...}, use_bin_type=True)
    return packed


def test_the_issue_message_types_are_registered() -> None:
    assert set(SAMPLES) <= set(m.REGISTRY)
    for name, msg in SAMPLES.items():
        assert name == type(msg).TYPE
        assert m.REGISTRY[name] is type(msg)


@pytest.mark.parametrize("name", sorted(m.REGISTRY))
def test_round_trip(name: str) -> None:
    msg = sample(m.REGISTRY[name])
    env = decode(encode(msg, id="req-1", sender="agent-n1"))
    assert isinstance(env, Envelope)
    assert env.msg == msg
    assert type(env.msg) is type(msg)
    assert (env.id, env.sender, env.version, env.type) == ("req-1", "agent-n1", m.PROTOCOL_VERSION, name)
    assert env.ts > 1.6e9


def test_defaults_fill_missing_optional_fields() -> None:
    env = decode(frame(type="create_slice", body={"spec": {"name": "x"}}))
    assert env.msg == m.CreateSlice(spec={"name": "x"}, dry_run=False, owner=None)
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


@pytest.mark.parametrize("name", sorted(m.REGISTRY))
def test_every_truncation_of_a_valid_frame_is_refused(name: str) -> None:
    data = encode(sample(m.REGISTRY[name]), id="r", sender="s")
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
        ({"v": "1"}, "version"),
        ({"v": True}, "version"),
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
    with pytest.raises(ProtocolError, match=r"body must be a map"):
        decode(frame(type="show_slice", body=body))


@pytest.mark.parametrize(
    ("type_name", "body", "field"),
    [
        ("show_slice", {}, "name"),
        ("error", {"code": "x"}, "reason"),
        ("heartbeat", {"node": "n"}, "generation"),
        ("renew_slice", {"name": "a"}, "seconds"),
        ("register", {}, "node"),
        ("create_slice", {"dry_run": True}, "spec"),
        ("desired", {}, "generation"),
    ],
)
def test_missing_required_field(type_name: str, body: dict[str, Any], field: str) -> None:
    with pytest.raises(ProtocolError, match=rf"{type_name}: missing field '{field}'"):
        decode(frame(type=type_name, body=body))


@pytest.mark.parametrize(
    ("type_name", "body", "field"),
    [
        ("show_slice", {"name": 5}, "name"),
        ("show_slice", {"name": None}, "name"),
        ("heartbeat", {"node": "n", "generation": "x"}, "generation"),
        ("heartbeat", {"node": "n", "generation": True}, "generation"),
        ("heartbeat", {"node": "n", "generation": 1.0}, "generation"),
        ("heartbeat", {"node": "n", "generation": 1, "slivers": {}}, "slivers"),
        ("heartbeat", {"node": "n", "generation": 1, "usage": []}, "usage"),
        ("renew_slice", {"name": "a", "seconds": True}, "seconds"),
        ("renew_slice", {"name": "a", "seconds": 1.5}, "seconds"),
        ("create_slice", {"spec": "name: a"}, "spec"),
        ("create_slice", {"spec": {}, "dry_run": 1}, "dry_run"),
        ("create_slice", {"spec": {}, "owner": 7}, "owner"),
        ("register", {"node": [], "generation": 0}, "node"),
        ("ok", {"result": [1]}, "result"),
        ("error", {"code": 1, "reason": "r"}, "code"),
    ],
)
def test_wrong_field_type(type_name: str, body: dict[str, Any], field: str) -> None:
    with pytest.raises(ProtocolError, match=rf"{type_name}: field '{field}' has the wrong type"):
        decode(frame(type=type_name, body=body))


def test_optional_field_accepts_none() -> None:
    assert decode(frame(type="create_slice", body={"spec": {}, "owner": None})).msg == m.CreateSlice(spec={})


def test_extra_unknown_body_fields_are_ignored() -> None:
    env = decode(frame(type="show_slice", body={"name": "a", "colour": "blue", "future_field": [1, 2]}))
    assert env.msg == m.ShowSlice(name="a")
    env = decode(frame(type="ping", body={"anything": 1}))
    assert env.msg == m.Ping()


def test_extra_envelope_keys_are_ignored() -> None:
    assert decode(frame(type="show_slice", body={"name": "a"}, trace="t-1")).msg == m.ShowSlice("a")


@pytest.mark.parametrize("version", [0, 2, 99, -1])
def test_version_mismatch_names_both_versions_and_keeps_the_id(version: int) -> None:
    data = encode(m.Register(node={"name": "n"}), id="req-42", sender="agent-x", version=version)
    with pytest.raises(VersionMismatch) as err:
        decode(data)
    exc = err.value
    assert isinstance(exc, ProtocolError)
    assert exc.code == "version-mismatch"
    assert f"v{version}" in str(exc) and f"v{m.PROTOCOL_VERSION}" in str(exc)
    assert exc.msg_id == "req-42"
    assert exc.type_name == "register"
    assert exc.version == version


def test_version_mismatch_is_reported_even_for_unknown_types() -> None:
    # a newer peer may use types this side does not know: the version is the useful reason
    with pytest.raises(VersionMismatch):
        decode(frame(v=2, type="brand_new_type", body={"x": 1}))


def test_registry_refuses_duplicate_types() -> None:
    with pytest.raises(ValueError):
        m.message(m.Ping)


def test_build_and_body_of_are_inverse() -> None:
    for name, cls in m.REGISTRY.items():
        msg = sample(cls)
        assert m.build(name, m.body_of(msg)) == msg


def test_requests_and_notices() -> None:
    notices = {name for name, cls in m.REGISTRY.items() if not cls.REQUEST}
    assert {"ok", "error", "report", "desired"} <= notices
    assert not notices & {
        "register",
        "heartbeat",
        "create_slice",
        "list_slices",
        "show_slice",
        "delete_slice",
        "renew_slice",
        "list_nodes",
        "list_sites",
        "ping",
    }
