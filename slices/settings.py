"""One settings schema per daemon: each field has a type, a default and a help line.

Values are layered: defaults -> YAML file -> environment (``SLICEMESH_<FIELD>``) -> command
line. Unknown keys in the file are errors, as in slice specs.
"""

from __future__ import annotations

import dataclasses
import math
import os
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from slices.checker import shown
from slices.errors import SpecError
from slices.limits import wire_int
from slices.yamlio import load_yaml

T = TypeVar("T")


def setting(default: Any, help: str) -> Any:
    """Declare a settings field: ``name: int = setting(3, "why it exists")``."""
    if isinstance(default, (dict, list)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata={"help": help})
    return dataclasses.field(default=default, metadata={"help": help})


def describe(cls: type[Any]) -> list[tuple[str, str, Any, str]]:
    """(name, type, default, help) for every field: for ``--help`` and docs."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc,operator]
        out.append((f.name, getattr(hints[f.name], "__name__", str(hints[f.name])), default, f.metadata.get("help", "")))
    return out


def _coerce(name: str, hint: Any, value: Any, source: str) -> Any:
    origin = typing.get_origin(hint)
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if value is None:
        if type(None) in typing.get_args(hint):
            return None
        raise SpecError(name, f"must not be empty ({source})")
    if origin is not None and args and origin not in (dict, list):  # Optional[X]
        return _coerce(name, args[0], value, source)
    base = origin or hint
    try:
        if base is bool:
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            if not isinstance(value, bool):
                raise ValueError(value)
            return value
        if base is float:  # finite only: a NaN period or deadline never fires
            if isinstance(value, bool) or not math.isfinite(number := float(value)):
                raise ValueError(value)
            return number
        if base is int:  # within 64 bits, as every consumer (wire, SQLite, the kernel) holds it
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            if isinstance(value, str) and not value.strip().lstrip("-").isdigit():
                raise ValueError(value)
            if not wire_int(whole := int(value)):
                raise ValueError(value)
            return whole
        if base is str:
            if isinstance(value, (dict, list)):
                raise ValueError(value)
            return str(value)
        if base in (dict, list):
            if isinstance(value, str):
                value = load_yaml(value, source)
            if not isinstance(value, base):
                raise ValueError(value)
            return value
    except (TypeError, ValueError, OverflowError):
        raise SpecError(name, f"{shown(value)} is not a valid {getattr(base, '__name__', base)} ({source})") from None
    return value


def load(cls: type[T], *, file: str | Path | None = None, env: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None) -> T:
    """Build ``cls`` from defaults, then the YAML file, then the environment, then overrides."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values: dict[str, Any] = {}
    if file is not None:
        path = Path(file)
        try:
            doc = load_yaml(path.read_text(), str(path)) or {}
        except OSError as exc:
            raise SpecError("", f"cannot read config {path}: {exc.strerror}") from None
        if not isinstance(doc, dict):
            raise SpecError("", f"{path}: must be a mapping of settings")
        for key, value in doc.items():
            if key not in names:
                raise SpecError(str(key), f"unknown setting in {path}; known: {', '.join(sorted(names))}")
            values[key] = _coerce(key, hints[key], value, str(path))
    env = os.environ if env is None else env
    for name in names:
        key = "SLICEMESH_" + name.upper()
        if key in env:
            values[name] = _coerce(name, hints[name], env[key], f"${key}")
    for name, value in (overrides or {}).items():
        if value is not None:
            if name not in names:
                raise SpecError(name, "unknown setting")
            values[name] = _coerce(name, hints[name], value, "command line")
    return cls(**values)
