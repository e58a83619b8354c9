"""Reproducible measurements, run as ``slicemesh bench NAME`` (not part of the test suite).

Each benchmark module exposes ``add_arguments(parser)`` and ``run(args) -> dict``: it prints
its table (what it measured, the machine, the anchor it compares to) and returns its figures,
which ``--json`` prints as one JSON object.
"""

from __future__ import annotations

import importlib
from types import ModuleType

#: name -> module under ``benchmarks``
BENCHMARKS = {
    "placement": "benchmarks.placement",
    "e2e": "benchmarks.e2e",
    "heartbeat": "benchmarks.heartbeat",
    "churn": "benchmarks.churn",
    "footprint": "benchmarks.footprint",
    "container": "benchmarks.container_bench",
    "wan": "benchmarks.wan",
    "responsiveness": "benchmarks.responsiveness",
    "isolation": "benchmarks.isolation",
    "migration": "benchmarks.migration",
    "codeship": "benchmarks.codeship",
    "peers": "benchmarks.peers",
}


def load(name: str) -> ModuleType:
    return importlib.import_module(BENCHMARKS[name])
