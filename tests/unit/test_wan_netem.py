"""The netem path's generated tc configuration (the kernel here has no netem: see docs/wan.md)."""

from __future__ import annotations

import re

import pytest

from node_agent.wan.model import WanNode, WanSettings, one_way_ms
from node_agent.wan.netem import tc_lines

pytestmark = pytest.mark.timeout(10)

NODES = [
    WanNode("princeton-1", "princeton", 40.3431, -74.6551, "10.100.0.0/24", "sm-aaaaaa"),
    WanNode("tokyo-1", "tokyo", 35.7126, 139.7620, "10.100.1.0/24", "sm-bbbbbb"),
    WanNode("zurich-1", "eth-zurich", 47.3763, 8.5477, "10.100.2.0/24", "sm-cccccc"),
]


def test_one_htb_per_bridge_one_netem_class_per_other_node() -> None:
    s = WanSettings()
    lines = tc_lines(NODES, s)
    for dst in NODES:
        mine = [line for line in lines if f" dev {dst.bridge} " in line]
        assert mine[0] == f"qdisc add dev {dst.bridge} root handle 1: htb default 1"
        assert mine[1].startswith(f"class add dev {dst.bridge} parent 1: classid 1:1 htb rate")
        filters = [line for line in mine if line.startswith("filter")]
        netems = [line for line in mine if " netem " in line]
        assert len(filters) == len(netems) == len(NODES) - 1
        for src in NODES:
            if src is dst:
                assert not any(src.subnet in f for f in filters)  # a node's own traffic is switched, never delayed
                continue
            f = next(f for f in filters if f"match ip src {src.subnet} " in f)
            flow = f.split("flowid ")[1]
            minor = flow.split(":")[1]
            netem = next(n for n in netems if f"parent {flow} handle {minor}:" in n)
            delay = float(re.search(r"delay ([0-9.]+)ms", netem).group(1))  # type: ignore[union-attr]
            assert delay == pytest.approx(one_way_ms(s, src, dst), abs=0.001)
            assert f"limit {s.queue_packets}" in netem and "loss" not in netem and "distribution" not in netem


def test_jitter_and_loss_are_passed_to_netem() -> None:
    lines = tc_lines(NODES[:2], WanSettings(jitter_ms=2.5, loss=0.01))
    netem = next(line for line in lines if " netem " in line)
    assert "2.500ms distribution normal" in netem
    assert "loss random 1.0000%" in netem


def test_class_ids_are_hex_and_distinct() -> None:
    many = [WanNode(f"n{i}", f"s{i}", 0.0, float(i % 180), f"10.{i // 256}.{i % 256}.0/24", f"b{i}") for i in range(20)]
    lines = tc_lines(many, WanSettings())
    classids = [line.split("classid ")[1].split()[0] for line in lines if line.startswith("class add dev b0 ")]
    assert len(set(classids)) == 20 and "1:a" in classids and "1:14" in classids
