"""Typed records on the wire: one encoder and one decoder for every message body.

Every message body and every record nested in one is a frozen dataclass. ``decode(cls, value)``
walks the type hints, checks each value's type and bounds and builds the dataclass; anything
else raises ``ProtocolError`` naming the field path (``node.capacity.cpu: must be finite``).
There is no second, hand-written validator anywhere: handlers receive typed values.

Why bounds live here: a peer's numbers and strings are stored, summed, printed and passed to
the kernel, so every one is bounded where it enters. Defaults keep any value encodable and
harmless (finite floats, 64-bit ints, no control characters in names); fields override them
with ``fld(...)`` metadata. String kinds:

* ``name`` (default): identifiers, states, codes; control characters are refused.
* ``text``: free text from a peer (reasons, descriptions): control characters are replaced by
  ``?`` so nothing a peer sends can drive a terminal, and it is cut at ``max_len``.
* ``data``: command arguments and environment values: anything but NUL.

Decoders are compiled once per type (a record's as generated Python source, the values of
common types checked inline), so a heartbeat with a thousand sliver statuses costs about a
call per record, not a walk over type hints.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, TypeVar

import msgpack

from slices.errors import ProtocolError

T = TypeVar("T")

INT64 = (-(2**63), 2**63 - 1)
FLOAT_RANGE = (-1e300, 1e300)  # a float without bounds of its own: finite, and summable
MAX_NAME = 256
MAX_TEXT = 4096
MAX_DATA = 1 << 20
MAX_ITEMS = 1_000_000
MAX_KEYS = 10_000
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class Bad(Exception):
    """A value that does not fit its type; ``path`` grows as it propagates outwards."""

    def __init__(self, reason: str, path: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.path = path

    def under(self, key: str) -> Bad:
        self.path = f"{key}.{self.path}" if self.path and not self.path.startswith("[") else f"{key}{self.path}"
        return self


def fld(
    default: Any = dataclasses.MISSING,
    *,
    factory: Callable[[], Any] | None = None,
    kind: str = "name",
    max_len: int | None = None,
    lo: float | None = None,
    hi: float | None = None,
    pattern: str | None = None,
    max_items: int | None = None,
    key_pattern: str | None = None,
) -> Any:
    """A dataclass field with wire bounds: ``cpu: float = fld(0.0, lo=0, hi=1e6)``.

    For lists and maps, ``kind``, ``max_len``, ``lo``, ``hi`` and ``pattern`` bound each item
    (each value of a map); ``key_pattern`` bounds a map's keys.
    """
    meta = {
        "kind": kind,
        "max_len": max_len,
        "lo": lo,
        "hi": hi,
        "pattern": re.compile(pattern) if pattern else None,
        "max_items": max_items,
        "key_pattern": re.compile(key_pattern) if key_pattern else None,
    }
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


Decoder = Callable[[object], Any]
FieldDecoder = Callable[[str, Any, Mapping[str, Any]], Decoder]  # a field's decoder from its name, type and bounds
_DECODERS: dict[Any, Decoder] = {}
_NO_META: Mapping[str, Any] = {}


def _what(value: object) -> str:
    return "nothing" if value is None else type(value).__name__


def _str_bounds(meta: Mapping[str, Any]) -> tuple[str, int, re.Pattern[str] | None]:
    """A string field's kind, longest length and pattern (the decoder's and its inline test's)."""
    kind = meta.get("kind", "name")
    return kind, meta.get("max_len") or {"name": MAX_NAME, "text": MAX_TEXT, "data": MAX_DATA}[kind], meta.get("pattern")


def _num_bounds(meta: Mapping[str, Any], default: tuple[float, float]) -> tuple[float, float]:
    """A number field's bounds (the decoder's and its inline test's)."""
    lo = default[0] if meta.get("lo") is None else meta["lo"]
    hi = default[1] if meta.get("hi") is None else meta["hi"]
    return lo, hi


def _str_decoder(meta: Mapping[str, Any]) -> Decoder:
    kind, max_len, pattern = _str_bounds(meta)

    def dec(value: object) -> str:
        if not isinstance(value, str):
            raise Bad(f"must be a string, got {_what(value)}")
        if kind == "text":
            return _CONTROL.sub("?", value[:max_len])
        if len(value) > max_len:
            raise Bad(f"longer than {max_len} characters")
        if kind == "data":
            if "\x00" in value:
                raise Bad("contains a NUL character")
        elif _CONTROL.search(value):
            raise Bad("contains control characters")
        if pattern is not None and not pattern.fullmatch(value):
            raise Bad(f"{value!r} does not match {pattern.pattern}")
        return value

    return dec


def _int_decoder(meta: Mapping[str, Any]) -> Decoder:
    lo, hi = _num_bounds(meta, INT64)

    def dec(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise Bad(f"must be a whole number, got {_what(value)}")
        if not lo <= value <= hi:
            raise Bad(f"must be between {lo:g} and {hi:g}, got {value}")
        return value

    return dec


def _float_decoder(meta: Mapping[str, Any]) -> Decoder:
    lo, hi = _num_bounds(meta, FLOAT_RANGE)

    def dec(value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise Bad(f"must be a number, got {_what(value)}")
        f = float(value)
        if not math.isfinite(f):
            raise Bad("must be finite")
        if not lo <= f <= hi:
            raise Bad(f"must be between {lo:g} and {hi:g}, got {f:g}")
        return f

    return dec


def _bytes_decoder(meta: Mapping[str, Any]) -> Decoder:
    max_len = meta.get("max_len") or MAX_DATA

    def dec(value: object) -> bytes:
        if not isinstance(value, bytes):
            raise Bad(f"must be bytes, got {_what(value)}")
        if len(value) > max_len:
            raise Bad(f"longer than {max_len} bytes")
        return value

    return dec


def _bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise Bad(f"must be true or false, got {_what(value)}")
    return value


def _any(value: object) -> object:
    return value


def _compile(hint: Any, meta: Mapping[str, Any]) -> Decoder:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        options = [a for a in args if a is not type(None)]
        if len(options) != 1:
            raise TypeError(f"unions other than X | None are not wire types: {hint}")
        return _optional(_compile(options[0], meta))
    if origin is Literal:
        allowed = frozenset(args)
        shown = ", ".join(map(str, args))

        def literal(value: object) -> object:
            if not isinstance(value, str) or value not in allowed:
                raise Bad(f"{str(value)[:40]!r} is not one of: {shown}")
            return value

        return literal
    if origin in (list, tuple):
        item = _compile(args[0], meta)
        max_items = meta.get("max_items") or MAX_ITEMS
        make = list if origin is list else tuple
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            raise TypeError(f"only tuple[X, ...] is a wire type: {hint}")

        return _fast_collection(_seq(item, max_items, make), origin is list, max_items, (args[0], meta))
    if origin is dict:
        key = _compile(args[0], {"pattern": meta.get("key_pattern")})
        val = _compile(args[1], meta)
        max_keys = meta.get("max_items") or MAX_KEYS

        def mapping(value: object) -> dict[Any, Any]:
            if not isinstance(value, dict):
                raise Bad(f"must be a map, got {_what(value)}")
            if len(value) > max_keys:
                raise Bad(f"more than {max_keys} entries")
            out = {}
            for k, v in value.items():
                kk = key(k)
                try:
                    out[kk] = val(v)
                except Bad as exc:
                    raise exc.under(f"[{kk!r}]") from None
            return out

        return _fast_collection(mapping, True, max_keys, (args[1], meta), (args[0], {"pattern": meta.get("key_pattern")}))
    if hint is Any:
        return _any
    if hint is bool:
        return _bool
    if hint is int:
        return _int_decoder(meta)
    if hint is float:
        return _float_decoder(meta)
    if hint is str:
        return _str_decoder(meta)
    if hint is bytes:
        return _bytes_decoder(meta)
    if dataclasses.is_dataclass(hint):
        return _record_decoder(hint)  # type: ignore[arg-type]
    raise TypeError(f"not a wire type: {hint!r}")


def _optional(inner: Decoder) -> Decoder:
    """``X | None``'s decoder: None as it is, anything else through ``inner``."""
    return lambda v: None if v is None else inner(v)


def _seq(item: Decoder, max_items: int, make: Callable[[list[Any]], Any]) -> Decoder:
    """A list's decoder: each item through ``item``, at most ``max_items`` of them."""

    def seq(value: object) -> Any:
        if not isinstance(value, (list, tuple)):
            raise Bad(f"must be a list, got {_what(value)}")
        if len(value) > max_items:
            raise Bad(f"more than {max_items} items")
        out = []
        for i, v in enumerate(value):
            try:
                out.append(item(v))
            except Bad as exc:
                raise exc.under(f"[{i}]") from None
        return make(out)

    return seq


def _fast_check(hint: Any, meta: Mapping[str, Any], ns: dict[str, Any], tag: str, v: str = "v") -> str | None:
    """A Python test of the variable ``v`` that holds only when ``hint``'s decoder would
    return its value itself: the common case inlined (no call), anything else goes to the
    full decoder, so what is refused, and how it is said, stays the decoder's alone. None:
    no such test."""
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        inner = _fast_check(options[0], meta, ns, tag, v) if len(options) == 1 else None
        return None if inner is None else f"({v} is None or ({inner}))"
    if hint is bool:
        return f"({v} is True or {v} is False)"
    if hint is int or hint is float:
        lo, hi = _num_bounds(meta, INT64 if hint is int else FLOAT_RANGE)
        ns[f"lo_{tag}"], ns[f"hi_{tag}"] = lo, hi
        test = f"type({v}) is {hint.__name__} and lo_{tag} <= {v} <= hi_{tag}"
        if hint is float and not (math.isfinite(lo) and math.isfinite(hi)):
            test += f" and _isfinite({v})"
        return test
    if hint is str:
        kind, ns[f"max_{tag}"], pattern = _str_bounds(meta)
        test = f"type({v}) is str and len({v}) <= max_{tag} and "
        # ASCII without control characters is exactly printable ASCII: one C call, no regex
        test += f'"\\x00" not in {v}' if kind == "data" else f"({v}.isprintable() if {v}.isascii() else _control({v}) is None)"
        if pattern is not None and kind != "text":
            ns[f"pat_{tag}"] = pattern.fullmatch
            test += f" and pat_{tag}({v}) is not None"
        return test
    return None


def _fast_collection(slow: Decoder, as_is: bool, max_items: int, item: tuple[Any, Mapping[str, Any]], key: tuple[Any, Mapping[str, Any]] | None = None) -> Decoder:
    """``slow`` (a list's or a map's decoder) behind its common case: a list (a map) of at most
    ``max_items`` whose every item (key and value) passes its inline test (``_fast_check``)
    is what ``slow`` would return, and is checked in one generated loop with no call per item
    (a node's offers, images and labels were 7 calls a row, a third of decoding 10,000 rows).
    Anything else goes to ``slow``, which alone refuses and says why. ``as_is``: such a value
    is returned itself (a list or a map); else as a tuple."""
    ns: dict[str, Any] = {"slow": slow, "most": max_items, "_control": _CONTROL.search, "_isfinite": math.isfinite}
    check = _fast_check(item[0], item[1], ns, "i")
    key_check = _fast_check(key[0], key[1], ns, "k") if key is not None else "True"
    if check is None or key_check is None:
        return slow
    made = "value" if as_is else "tuple(value)"
    if key is None:
        body = ["def dec(value):", "    if type(value) is list and len(value) <= most:", "        for v in value:", f"            if not ({check}):", "                return slow(value)", f"        return {made}", "    return slow(value)"]
    else:
        body = [
            "def dec(value):",
            "    if type(value) is dict and len(value) <= most:",
            "        for v, item in value.items():",
            f"            if not ({key_check}):",
            "                return slow(value)",
            "            v = item",
            f"            if not ({check}):",
            "                return slow(value)",
            "        return value",
            "    return slow(value)",
        ]
    exec(compile("\n".join(body), "<decoder of a collection>", "exec"), ns)
    fast: Decoder = ns["dec"]
    return fast


def _record_decoder(cls: type[Any]) -> Decoder:
    """A decoder for the record ``cls``, generated as Python source once per class: a record
    of 20 fields costs one call, not 20 calls of closures (10,000 node rows: 0.6 s before)."""
    if cls in _DECODERS:
        return _DECODERS[cls]
    built: list[Decoder] = []
    _DECODERS[cls] = lambda value: built[0](value)  # records may nest themselves
    built.append(_generate(cls, None, _plain_field, tables=True))
    size = getattr(cls, "WIRE_CACHE", 0)
    _DECODERS[cls] = _kept(built[0], size) if size else built[0]
    return _DECODERS[cls]


def _kept(dec: Decoder, size: int) -> Decoder:
    """``dec``, answering a map it decoded lately with the record it made then (the last
    ``size`` maps, by their packed bytes), for an immutable record that arrives again and
    again: an agent's desired set is sent whole at each change, each sliver's spec in each
    set. Packing a map to look it up is a quarter of decoding it, and the records an agent
    keeps are then the same objects set after set, so comparing them is ``is``."""
    made: dict[bytes, Any] = {}

    def kept(value: object) -> Any:
        if type(value) is not dict:
            return dec(value)  # a row, or garbage: the decoder says what is wrong with it
        try:
            key = msgpack.packb(value, use_bin_type=True)
        except (TypeError, ValueError, OverflowError):
            return dec(value)
        got = made.get(key)
        if got is None:
            got = dec(value)
            if len(made) >= size:
                with contextlib.suppress(KeyError, RuntimeError, StopIteration):  # another thread's eviction
                    del made[next(iter(made))]  # the oldest
            made[key] = got
        return got

    return kept


def _generate(cls: type[Any], order: Sequence[str] | None, compile_field: FieldDecoder, *, tables: bool = False) -> Decoder:
    """A record's decoder as Python source: from a map (``order`` None), or from a row, the
    array of its fields in ``order`` (a table's rows: ``tabled``). A field the row does not
    have takes its default; a column the record does not know is ignored (a newer peer's).
    ``compile_field`` makes each field's own decoder (from its name, type and bounds).
    ``tables``: a record with ``columns`` hands a value that has them to ``tabled``."""
    hints = typing.get_type_hints(cls)
    ns: dict[str, Any] = {"Bad": Bad, "_what": _what, "_MISSING": dataclasses.MISSING, "_control": _CONTROL.search, "_isfinite": math.isfinite, "cls": cls}
    fields = {i: f for i, f in enumerate(dataclasses.fields(cls)) if f.init}
    defaults: dict[int, str | None] = {}
    for i, f in fields.items():  # each field's decoder, name and default, in ``ns`` once
        ns[f"d{i}"] = compile_field(f.name, hints[f.name], f.metadata)
        ns[f"n{i}"] = f.name
        defaults[i] = _default_source(f, ns, i)
    if order is None:
        body = ["def dec(value):", "    if not isinstance(value, dict):", '        raise Bad(f"must be a map, got {_what(value)}")', "    get = value.get"]
        if tables and hints.get("columns") == Columns | None:  # a table: its rows may be arrays
            ns["_tabled"] = tabled
            body += ["    cols = get('columns')", "    if cols is not None:", "        return _tabled(cls, cols)(value)"]
    else:
        at = {name: j for j, name in enumerate(order)}
        body = ["def dec(value):", "    if type(value) is not list:", '        raise Bad(f"must be a row (a list), got {_what(value)}")', "    n = len(value)"]
        body += _full_row(cls, hints, fields, defaults, at, ns)
    for i, f in fields.items():
        if order is None:
            body.append(f"    v = get(n{i}, _MISSING)")
        elif f.name in at:
            body.append(f"    v = value[{at[f.name]}] if n > {at[f.name]} else _MISSING")
        else:
            body.append("    v = _MISSING")
        body.append("    if v is _MISSING:")
        body.append(f"        a{i} = {defaults[i]}" if defaults[i] is not None else f'        raise Bad("required", n{i})')
        check = _fast_check(hints[f.name], f.metadata, ns, str(i))
        if check is not None:
            body.append(f"    elif {check}:")
            body.append(f"        a{i} = v")
        body.append("    else:")
        body.append("        try:")
        body.append(f"            a{i} = d{i}(v)")
        body.append("        except Bad as exc:")
        body.append(f"            raise exc.under(n{i}) from None")
    body += _made_source(cls, {i: f"a{i}" for i in fields}, "    ", ns)
    form = "" if order is None else " (rows)"
    exec(compile("\n".join(body), f"<decoder of {cls.__qualname__}{form}>", "exec"), ns)
    made: Decoder = ns["dec"]
    return made


# ---- tables: big lists whose records are sent as arrays --------------------------------------

#: A reply's rows as arrays (protocol 2.7, asked for with ``rows="arrays"``): for each field
#: path whose records are sent as arrays (``nodes``, ``nodes.capacity``), the record's fields in
#: the order sent. Field names once per reply instead of once per row: a 10,000-node listing
#: was 6.1 MB, over half of it names, and unpacking the maps' keys and looking each field up
#: was most of decoding it.
Columns = dict[str, list[str]]
MAX_TABLES = 32  # column layouts kept compiled (a controller sends one per reply type)
_TABLED: dict[tuple[type, tuple[tuple[str, tuple[str, ...]], ...]], Decoder] = {}
_COLUMN = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}(\.[A-Za-z_][A-Za-z0-9_]{0,63}){0,3}")


def fields_of(cls: type[Any]) -> list[str]:
    """A record's fields in order: its columns when ``row_packable`` packs it."""
    return [f.name for f in dataclasses.fields(cls)]


def row_packable(obj: Any) -> list[Any]:
    """msgpack's ``default`` hook for a table's rows: a record becomes the array of its field
    values, in field order (``fields_of``)."""
    names = _field_names(obj)
    if names is None:
        raise TypeError(f"not a wire value: {type(obj).__name__}")
    own = _own_fields(obj, names)
    return list(own.values()) if own is not None else [getattr(obj, n) for n in names]


def tabled(cls: type[Any], columns: object) -> Decoder:
    """The decoder of ``cls`` (a reply with a ``columns`` field) whose records at the paths
    named in ``columns`` come as rows: arrays of their fields in the order given. Compiled
    once per layout; what a row holds is checked exactly as the map it stands for."""
    if not isinstance(columns, dict) or len(columns) > 16:
        raise Bad("must be a map of at most 16 field paths", "columns")
    layout = []
    for path, order in columns.items():
        if not isinstance(path, str) or not _PATH.fullmatch(path) or not isinstance(order, list) or len(order) > 256:
            raise Bad("each entry must be a field path and at most 256 field names", "columns")
        if not all(type(c) is str and _COLUMN.fullmatch(c) for c in order) or len(set(order)) != len(order):
            raise Bad(f"the fields of {path} must be distinct names", "columns")
        layout.append((path, tuple(order)))
    key = (cls, tuple(layout))
    made = _TABLED.get(key)
    if made is None:
        if len(_TABLED) >= MAX_TABLES:
            _TABLED.clear()  # a peer cycling layouts: compile again rather than grow
        whole = _generate(cls, None, _fields_at("", dict(layout)))
        made = _TABLED[key] = lambda value: replaced(whole(value), columns=None)  # how its rows travelled is not part of the record
    return made


def _plain_field(name: str, hint: Any, meta: Mapping[str, Any]) -> Decoder:
    """A field's decoder outside tables: by its type and bounds alone."""
    return _compile(hint, meta)


def _fields_at(prefix: str, layout: Mapping[str, tuple[str, ...]]) -> FieldDecoder:
    """A table's field decoders under ``prefix``: a field whose path ``layout`` names holds
    rows (its record alone, optional, or in a list); any other field decodes as usual."""

    def compile_field(name: str, hint: Any, meta: Mapping[str, Any]) -> Decoder:
        path = prefix + name
        if path not in layout:
            return _compile(hint, meta)
        return _rows_of(hint, meta, layout[path], _fields_at(path + ".", layout), path)

    return compile_field


def _rows_of(hint: Any, meta: Mapping[str, Any], order: tuple[str, ...], inner: FieldDecoder, path: str) -> Decoder:
    """The decoder of the field at ``path``, whose records come as rows in ``order`` (alone,
    optional or in a list); ``inner`` decodes their own fields."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (types.UnionType, typing.Union) and len(args) == 2 and type(None) in args:
        return _optional(_rows_of(next(a for a in args if a is not type(None)), meta, order, inner, path))
    if origin is list:
        return _seq(_rows_of(args[0], meta, order, inner, path), meta.get("max_items") or MAX_ITEMS, list)
    if not (dataclasses.is_dataclass(hint) and isinstance(hint, type)):
        raise Bad(f"{path} holds no records to send as rows", "columns")
    return _generate(hint, order, inner)


def _default_source(f: dataclasses.Field[Any], ns: dict[str, Any], i: int) -> str | None:
    """The expression of field ``f``'s default in a generated decoder (its value put in
    ``ns``), or None: the field is required."""
    if f.default is not dataclasses.MISSING:
        ns[f"default{i}"] = f.default
        return f"default{i}"
    if f.default_factory is not dataclasses.MISSING:
        ns[f"factory{i}"] = f.default_factory
        return f"factory{i}()"
    return None


def _made_source(cls: type[Any], values: Mapping[int, str], indent: str, ns: dict[str, Any]) -> list[str]:
    """The source that returns a record of ``cls`` from its fields' decoded values
    (``values``: each ``__init__`` field's index -> its expression): a plain record
    (``_plain``) is filled without its ``__init__``."""
    if _plain(cls):
        ns["_new"] = object.__new__
        return [f"{indent}made = _new(cls)", f"{indent}d = made.__dict__", *(f"{indent}d[n{i}] = {v}" for i, v in values.items()), f"{indent}return made"]
    names = [f.name for f in dataclasses.fields(cls)]
    return [f"{indent}return cls({', '.join(f'{names[i]}={v}' for i, v in values.items())})"]


def _full_row(
    cls: type[Any], hints: Mapping[str, Any], fields: Mapping[int, dataclasses.Field[Any]], defaults: Mapping[int, str | None], at: Mapping[str, int], ns: dict[str, Any]
) -> list[str]:
    """The source of a row decoder's common case: the row has every column sent (``at``:
    each column's position), unpacked at once, and each value the record keeps as it is
    passes its inline test (one boolean expression); only the fields that are records or
    collections go through their decoders (``d<i>``, as ``_generate`` put them in ``ns``).
    Any other row falls through to the field-by-field code after it, which alone refuses
    and says why. A 10,000-node listing's rows took 84 ms here instead of 95 (a
    10,000-sliver ``show``: 40 instead of 46)."""
    lines = [f"    if n == {len(at)}:", f"        {', '.join(f'c{j}' for j in range(len(at)))}, = value"]
    tests: list[str] = []
    decoded: list[str] = []
    values: dict[int, str] = {}
    for i, f in fields.items():
        j = at.get(f.name)
        if j is None:  # not sent: its default, as the field-by-field code gives it
            if defaults[i] is None:
                return []  # a required field missing: the field-by-field code says so
            values[i] = str(defaults[i])
            continue
        values[i] = f"c{j}"
        check = _fast_check(hints[f.name], f.metadata, ns, f"f{i}", f"c{j}")
        if check is not None:
            tests.append(f"({check})")
        else:
            decoded += ["            try:", f"                c{j} = d{i}(c{j})", "            except Bad as exc:", f"                raise exc.under(n{i}) from None"]
    return [*lines, f"        if {' and '.join(tests) or 'True'}:", *decoded, *_made_source(cls, values, "            ", ns)]


def _plain(cls: type[Any]) -> bool:
    """Whether a record of ``cls`` is exactly its fields' values: dataclass-made ``__init__``,
    every field an argument of it, no ``__post_init__`` and no slots. Its decoder may then set
    the fields itself: a frozen record's ``__init__`` sets each through
    ``object.__setattr__``, which was 60% of decoding a ``Resources``."""
    init = getattr(cls.__init__, "__code__", None)
    return (
        init is not None
        and init.co_filename == "<string>"  # made by dataclasses, not written by hand
        and not hasattr(cls, "__post_init__")
        and "__slots__" not in cls.__dict__
        and all(f.init for f in dataclasses.fields(cls))
    )


def decode(cls: type[T], value: object, what: str = "") -> T:
    """Build ``cls`` from a decoded msgpack value, or raise ``ProtocolError`` with the path."""
    try:
        result: T = _record_decoder(cls)(value)
    except Bad as exc:
        where = f"{what}.{exc.path}" if what and exc.path else (what or exc.path)
        raise ProtocolError(f"{where}: {exc.reason}" if where else exc.reason) from None
    return result


_FIELDS: dict[type, tuple[str, ...]] = {}
_PLAIN: dict[type, bool] = {}  # of the classes in _FIELDS: _plain(cls)
_NESTED: dict[type, tuple[str, ...]] = {}  # of the classes in _FIELDS: the fields whose type is not a scalar's


def _field_names(obj: Any) -> tuple[str, ...] | None:
    """A record's field names (kept per class), or None for anything that is not a record."""
    cls = type(obj)
    names = _FIELDS.get(cls)
    if names is None and dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        names = tuple(f.name for f in dataclasses.fields(obj))
        _PLAIN[cls] = _plain(cls)
        try:
            hints = typing.get_type_hints(cls)
            _NESTED[cls] = tuple(n for n in names if not _scalar_type(hints[n]))
        except (NameError, TypeError, KeyError):  # a hint that does not resolve: every field looked at
            _NESTED[cls] = names
        _FIELDS[cls] = names
    return names


def _scalar_type(hint: Any) -> bool:
    """Whether a field of type ``hint`` holds only scalars (``X | None`` and literals too)."""
    if hint in _SCALARS:
        return True
    origin = typing.get_origin(hint)
    if origin is Literal:
        return True
    if origin in (types.UnionType, typing.Union):
        return all(_scalar_type(a) for a in typing.get_args(hint))
    return False


def packable(obj: Any) -> dict[str, Any]:
    """msgpack's ``default`` hook: a record becomes the map of its fields, and msgpack packs
    the rest in C. The same wire form as ``to_wire`` without a Python walk over every leaf
    (the walk was most of the cost of a 10,000-row reply)."""
    names = _field_names(obj)
    if names is None:
        raise TypeError(f"not a wire value: {type(obj).__name__}")
    own = _own_fields(obj, names)
    return own if own is not None else {n: getattr(obj, n) for n in names}


def _own_fields(obj: Any, names: tuple[str, ...]) -> dict[str, Any] | None:
    """A plain record's (``_plain``) own ``__dict__`` when it holds exactly its ``names``:
    each set by ``__init__`` or a decoder, and nothing else (no cached property)."""
    if not _PLAIN.get(type(obj)):
        return None
    own: dict[str, Any] = obj.__dict__
    return own if len(own) == len(names) else None


def replaced(obj: T, **changes: Any) -> T:
    """``dataclasses.replace`` without ``__init__`` for a plain record (``_plain``): its
    fields, ``changes`` set over them. ``__init__`` checks nothing more for such a record,
    and copying its ``__dict__`` is a tenth of the cost (10,000 slivers of a slice differ in
    their id only). Any other record goes through ``dataclasses.replace``."""
    names = _field_names(obj)
    own = _own_fields(obj, names) if names is not None else None
    if own is None or not changes.keys() <= own.keys():
        return dataclasses.replace(obj, **changes)  # type: ignore[type-var]
    made: T = object.__new__(type(obj))
    fields = made.__dict__
    fields.update(own)
    fields.update(changes)
    return made


_SCALARS = frozenset({str, int, float, bool, bytes, type(None)})


def to_wire(obj: Any) -> Any:
    """A record (or anything nested in one) as plain maps, lists and scalars for msgpack or
    JSON (the CLI's ``--json``). Dispatch on the exact type first: most values are scalars,
    taken as they are without a call; a plain record is a copy of its ``__dict__`` with only
    the fields of non-scalar types walked (10,000 node rows were 550,000 calls, 0.6-0.8 s of
    ``slicemesh nodes``)."""
    cls = type(obj)
    if cls in _SCALARS:
        return obj
    if cls is list or cls is tuple:
        return [v if type(v) in _SCALARS else to_wire(v) for v in obj]
    if cls is dict:
        return {k: v if type(v) in _SCALARS else to_wire(v) for k, v in obj.items()}
    names = _field_names(obj)
    if names is not None:
        own = _own_fields(obj, names)
        if own is None:
            return {n: to_wire(getattr(obj, n)) for n in names}
        out = dict(own)  # the scalar fields as they are, in one copy; the others walked
        for n in _NESTED[cls]:
            v = out[n]
            if type(v) not in _SCALARS:
                out[n] = to_wire(v)
        return out
    if isinstance(obj, (str, int, float, bool, bytes)):
        return obj
    if isinstance(obj, (list, tuple)):
        return [to_wire(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_wire(v) for k, v in obj.items()}
    raise TypeError(f"not a wire value: {cls.__name__}")
