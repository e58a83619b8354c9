"""``slicemesh sim --wan ... --wan-<setting> ...``: the command-line face of ``WanSettings``.

The flags are made from the settings schema (type, default, help line), so a new setting is a
new flag without touching the CLI.
"""

from __future__ import annotations

import argparse
from typing import Any

from node_agent.wan.model import MODES, WanSettings
from slices.settings import describe


def add_wan_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("wide area between simulated machines (--backend real; docs/wan.md)")
    for name, kind, default, help_ in describe(WanSettings):
        if name == "mode":
            g.add_argument("--wan", dest="wan_mode", choices=MODES, default=None, help=f"{help_} (default {default})")
        elif kind in ("float", "int"):
            g.add_argument(f"--wan-{name.replace('_', '-')}", dest=f"wan_{name}", type=float if kind == "float" else int, default=None, help=f"{help_} (default {default:g})" if kind == "float" else f"{help_} (default {default})")
        elif kind == "dict":
            flag = f"--wan-{name.replace('_', '-')}"
            g.add_argument(flag, dest=f"wan_{name}", action="append", type=_site_ms, default=None, metavar="SITE=MS", help=f"{help_} (repeat {flag} for more sites)")
        elif kind == "bool":
            g.add_argument(f"--wan-{name.replace('_', '-')}", dest=f"wan_{name}", action=argparse.BooleanOptionalAction, default=None, help=f"{help_} (default {default})")


def _site_ms(text: str) -> tuple[str, float]:
    site, sep, ms = text.partition("=")
    try:
        if not sep or not site:
            raise ValueError(text)
        return site.strip(), float(ms)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not SITE=MS, e.g. princeton=0.5") from None


def wan_settings_from_args(a: argparse.Namespace) -> WanSettings:
    """The settings the user gave; the rest keep their defaults. Bad values raise ``SpecError``."""
    given: dict[str, Any] = {}
    for name, kind, _, _ in describe(WanSettings):
        value = getattr(a, f"wan_{name}", None)
        if value is not None:
            given[name] = dict(value) if kind == "dict" else value
    return WanSettings(**given)
