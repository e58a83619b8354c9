"""One settings schema per daemon: each field has a type, a default and a help line.

Values are layered: defaults -> YAML file -> environment (``SLICEMESH_<FIELD>``) -> command
line. Unknown keys in the file are errors, as in slice specs.

A field whose type is itself a settings dataclass is a *section* (the agent's ``runc:``, one
per backend): in YAML a mapping of its own fields, each checked like a top-level one; a layer
that names some of its keys leaves the others as the layer below had them; in the
environment each key is ``SLICEMESH_<SECTION>_<KEY>``; on the command line ``section.key``.
A schema may list in ``MOVED`` the keys that moved into a section, so an old config is told
where its key went instead of only that it is unknown.
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


def _is_section(hint: Any) -> bool:
    return isinstance(hint, type) and dataclasses.is_dataclass(hint)


def _default(f: dataclasses.Field[Any]) -> Any:
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc,operator]


def describe(cls: type[Any], prefix: str = "") -> list[tuple[str, str, Any, str]]:
    """(name, type, default, help) for every field, ``section.key`` for a section's: for
    ``--list-settings`` and docs."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if _is_section(hint):
            out += describe(hint, f"{prefix}{f.name}.")
        else:
            out.append((prefix + f.name, getattr(hint, "__name__", str(hint)), _default(f), f.metadata.get("help", "")))
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


def _section(name: str, hint: type[Any], value: Any, source: str, base: Any) -> Any:
    """``base`` (a section's dataclass) with the keys of mapping ``value`` replaced."""
    if isinstance(value, str):
        value = load_yaml(value, source)
    if not isinstance(value, dict):
        raise SpecError(name, f"must be a mapping of {name} settings ({source})")
    hints = typing.get_type_hints(hint)
    known = {f.name for f in dataclasses.fields(hint)}
    changes = {}
    for key, raw in value.items():
        if key not in known:
            raise SpecError(f"{name}.{key}", f"unknown setting ({source}); known: {', '.join(sorted(known))}")
        changes[key] = _coerce(f"{name}.{key}", hints[key], raw, source)
    return dataclasses.replace(base, **changes)


def load(cls: type[T], *, file: str | Path | None = None, env: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None) -> T:
    """Build ``cls`` from defaults, then the YAML file, then the environment, then overrides."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    moved: Mapping[str, str] = getattr(cls, "MOVED", {})
    values: dict[str, Any] = {}

    def put(key: str, value: Any, source: str) -> None:
        name, _, sub = key.partition(".")
        if name not in fields:
            if name in moved:
                raise SpecError(name, f"this setting moved to {moved[name]} ({source})")
            raise SpecError(name, f"unknown setting in {source}; known: {', '.join(sorted(fields))}")
        hint = hints[name]
        if _is_section(hint):
            base = values[name] if name in values else _default(fields[name])
            values[name] = _section(name, hint, {sub: value} if sub else value, source, base)
        elif sub:
            raise SpecError(key, "unknown setting")
        else:
            values[name] = _coerce(name, hint, value, source)

    if file is not None:
        path = Path(file)
        try:
            doc = load_yaml(path.read_text(), str(path)) or {}
        except OSError as exc:
            raise SpecError("", f"cannot read config {path}: {exc.strerror}") from None
        if not isinstance(doc, dict):
            raise SpecError("", f"{path}: must be a mapping of settings")
        for key, value in doc.items():
            put(str(key), value, str(path))
    env = os.environ if env is None else env
    for name in fields:
        subs = [s.name for s in dataclasses.fields(hints[name])] if _is_section(hints[name]) else [""]
        for sub in subs:
            var = "SLICEMESH_" + (f"{name}_{sub}" if sub else name).upper()
            if var in env:
                put(f"{name}.{sub}" if sub else name, env[var], f"${var}")
    for key, value in (overrides or {}).items():
        if value is not None:
            put(key, value, "command line")
    return cls(**values)
