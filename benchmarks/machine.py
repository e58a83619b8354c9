"""The machine a benchmark ran on, for its table header."""

from __future__ import annotations

import platform
from typing import Any

import psutil


def describe() -> dict[str, Any]:
    return {
        "cores": psutil.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "cpu": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


def header(title: str, anchor: str) -> str:
    m = describe()
    return f"{title}\nmachine: {m['cores']} cores, {m['memory_gib']} GiB, Python {m['python']}, kernel {m['kernel']}\nanchor: {anchor}\n"
