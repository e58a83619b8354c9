"""slices/limits.py: the bounds of docs/spec.md hold what the wire and the kernel can carry."""

from __future__ import annotations

import time
from typing import Any

import msgpack
import pytest

from node_agent.cgroup_limits import CPU_PERIOD_US, cpu_quota, cpu_shares
from slices import limits
from slices.model import SliverSpec
from slices.spec import SliceSpec, parse_spec

pytestmark = pytest.mark.timeout(60)


def largest_doc() -> dict[str, Any]:
    """The biggest spec the limits allow, every size at its maximum."""
    return {
        "name": "a" * 63,
        "description": "\U0001f600" * limits.MAX_DESCRIPTION_CHARS,  # 4 UTF-8 bytes each
        "image": "i" * 64,
        "lifetime": "56d",
        "command": ["x" * 31] * limits.MAX_COMMAND_ARGS,  # 128 x (31 + 1) = 4 KiB
        "env": {f"V{i:07d}": "v" * 54 for i in range(limits.MAX_ENV_VARS)},  # 64 x (8 + 1 + 54 + 1) = 4 KiB
        "resources": {"cpu": limits.MAX_CPU, "memory": "16Ti", "disk": "8Ti", "bandwidth": "32Gbit"},
        "placement": {"count": limits.MAX_COUNT},
    }


def sliver_of(spec: SliceSpec) -> SliverSpec:
    """A sliver as the controller makes one from a spec."""
    return spec.sliver(f"{spec.name}-deadbeef")


def test_the_largest_spec_parses_and_its_sizes_are_at_the_limits() -> None:
    spec = parse_spec(largest_doc())
    assert spec.command is not None and sum(len(a) + 1 for a in spec.command) == limits.MAX_COMMAND_BYTES
    assert sum(len(k) + len(v) + 2 for k, v in spec.env.items()) == limits.MAX_ENV_BYTES
    assert len(limits.encode(largest_doc())) <= limits.MAX_SPEC_BYTES


def test_a_node_holding_a_thousand_of_the_largest_slivers_is_half_its_frame_cap() -> None:
    """The sizes were chosen so: one sliver at every maximum encodes to about 8.4 KiB."""
    one = len(msgpack.packb(sliver_of(parse_spec(largest_doc())).to_wire(), use_bin_type=True))
    assert one < 9 * 1024
    assert 1000 * one < 16 * limits.MiB * 0.55
    typical = parse_spec({"name": "web-probe", "description": "probes", "command": ["sh", "-c", "sleep 1000"], "env": {"MODE": "probe"}})
    assert len(msgpack.packb(sliver_of(typical).to_wire(), use_bin_type=True)) < 300


def test_a_whole_spec_is_far_below_the_controllers_frame_cap() -> None:
    assert limits.MAX_SPEC_BYTES * 8 <= 1024 * 1024


def test_the_cpu_maximum_fits_cgroup_shares_and_quota() -> None:
    assert cpu_shares(limits.MAX_CPU) == 262144  # the kernel's MAX_SHARES; runc's cpu.weight 10000
    assert cpu_quota(limits.MAX_CPU) == limits.MAX_CPU * CPU_PERIOD_US < 2**44
    assert cpu_quota(limits.MIN_CPU) == 1000  # the kernel's minimum quota


def test_the_bandwidth_maximum_fits_tbf_rate_in_32_bits() -> None:
    assert limits.MAX_BANDWIDTH // 8 < 2**32
    assert (limits.MAX_BANDWIDTH + 3 * 10**9) // 8 >= 2**32  # 35 Gbit would not


def test_sums_over_a_whole_slice_stay_inside_64_bits() -> None:
    assert limits.MAX_COUNT * limits.MAX_MEMORY < limits.INT_MAX
    assert limits.MAX_COUNT * limits.MAX_DISK < limits.INT_MAX
    assert limits.MAX_COUNT * limits.MAX_BANDWIDTH < limits.INT_MAX


# ---- check_document ------------------------------------------------------------------------


def test_a_plain_document_passes() -> None:
    assert limits.check_document({"a": [1, 2.5, "x", None, True], "b": {"c": -(2**63)}}) == []


@pytest.mark.parametrize(
    ("doc", "path", "words"),
    [
        ({"env": {"N": 2**64 + 1}}, "env.N", "64 bits"),
        ({"a": [1, 10**400]}, "a[1]", "64 bits"),
        ({"m": float("inf")}, "m", "finite"),
        ({"p": {"lat": float("nan")}}, "p.lat", "finite"),
        ({"d": "\ud800"}, "d", "surrogate"),
        ({"r": {"\ud800": None}}, "r.\\ud800", "key is not valid Unicode"),
        ({"r": {"é\ud800": None}}, "r.é\\ud800", "key is not valid Unicode"),  # only the surrogate escaped
        ({"b": b"bytes"}, "b", "bytes"),
        ({"s": {1, 2}}, "s", "a set"),
        ({"t": (1, 2)}, "t", "a tuple"),
        ({1: "x"}, "1", "keys must be text"),
        ({None: "x"}, "None", "keys must be text"),
        ({10**5000: "x"}, "<a number too large to show>", "keys must be text"),
    ],
)
def test_values_the_wire_cannot_carry_are_named_by_path(doc: dict[Any, Any], path: str, words: str) -> None:
    problems = limits.check_document(doc)
    assert any(p == path and words in r for p, r in problems), problems


def test_deep_nesting_is_refused_without_recursion() -> None:
    doc: Any = "x"
    for _ in range(100_000):
        doc = [doc]
    [(path, reason)] = limits.check_document({"description": doc})
    assert path.startswith("description[0][0]") and f"more than {limits.MAX_DEPTH} levels" in reason


def test_a_cycle_is_refused() -> None:
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    [(_, reason)] = limits.check_document({"a": cyclic})
    assert "levels deep" in reason


def test_shared_values_count_every_time_so_a_billion_laughs_stops_early() -> None:
    doc: Any = ["lol"] * 10
    for _ in range(9):
        doc = [doc] * 10  # 10**10 values if walked in full
    t0 = time.monotonic()
    [(_, reason)] = limits.check_document(doc)
    assert f"more than {limits.MAX_VALUES} values" in reason
    assert time.monotonic() - t0 < 2


def test_a_document_over_the_size_cap_is_refused_before_encoding() -> None:
    [(_, reason)] = limits.check_document({"description": "x" * (50 * limits.MiB)})
    assert "128 KiB" in reason


def test_the_exact_encoded_size_is_checked() -> None:
    doc = {f"k{i}": 1.5 for i in range(limits.MAX_SPEC_BYTES // 12)}  # small estimate, 9-byte floats
    [(_, reason)] = limits.check_document(doc)
    assert "encodes to" in reason and "128 KiB" in reason


@pytest.mark.parametrize(("n", "text"), [(128 * 1024, "128 KiB"), (16 * 1024**4, "16 TiB"), (1000, "1000 bytes"), (3 * 1024**2, "3 MiB")])
def test_human_bytes(n: int, text: str) -> None:
    assert limits.human_bytes(n) == text
