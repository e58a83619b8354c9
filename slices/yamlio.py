"""Strict YAML for everything people write: slice specs and daemon configs.

Duplicate keys are errors, only true/false are booleans (YAML 1.1 turns ``country: NO``,
Norway, into ``False``), dates stay text, and malformed input becomes a ``SpecError`` with
line and column. What nothing downstream can hold is refused here, at its line, before Python
meets it: text over ``MAX_YAML_BYTES``, nesting over ``MAX_DEPTH`` (the composer recurses, so
100,000 ``[`` would otherwise end in a RecursionError), integers outside 64 bits (a 5000-digit
one makes ``int()`` raise), ``.inf``/``.nan``, and the tags for bytes, sets and timestamps.
"""

from __future__ import annotations

import math
import re
from typing import Any

import yaml

from slices.errors import SpecError
from slices.limits import MAX_DEPTH, MAX_YAML_BYTES, human_bytes, wire_int

_MAX_NUMBER_CHARS = 40


class _Refused(yaml.constructor.ConstructorError):
    """Well-formed YAML holding something slicemesh does not accept: reported with its field path."""

    path = ""


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys, deep nesting and unbounded numbers."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.path: list[str] = []  # of the node being composed: "resources", ".cpu"
        self.paths: dict[int, str] = {}  # id(node) -> its field path, for errors at construction

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:  # index: a key node, or a list index
        if isinstance(index, yaml.ScalarNode):
            self.path.append(f".{str(index.value)[:40]}")
        else:
            self.path.append(f"[{index}]" if isinstance(index, int) else "")
        try:
            if len(self.path) > MAX_DEPTH + 1:
                err = _Refused(None, None, f"nested more than {MAX_DEPTH} levels deep", self.peek_event().start_mark)  # type: ignore[no-untyped-call]
                where = self._where()
                err.path = where if len(where) <= 80 else where[:77] + "..."
                raise err
            node = super().compose_node(parent, index)
            self.paths.setdefault(id(node), self._where())
            return node
        finally:
            self.path.pop()

    def _where(self) -> str:
        return "".join(self.path).lstrip(".")

    def refuse(self, node: yaml.Node, problem: str) -> _Refused:
        err = _Refused(None, None, problem, node.start_mark)
        err.path = self.paths.get(id(node), "")
        return err


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if isinstance(key, (dict, list)):  # "? {a: 1}": a complex key, unhashable
            raise loader.refuse(key_node, "a mapping or a list cannot be a key")
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


def _construct_int(loader: _StrictLoader, node: yaml.ScalarNode) -> int:
    text = str(node.value)
    if len(text) > _MAX_NUMBER_CHARS:
        raise loader.refuse(node, f"the number {text[:20]}... is too long (at most {_MAX_NUMBER_CHARS} characters)")
    value: int = loader.construct_yaml_int(node)
    if not wire_int(value):
        raise loader.refuse(node, f"{text} does not fit in 64 bits (quote it if it is text)")
    return value


def _construct_float(loader: _StrictLoader, node: yaml.ScalarNode) -> float:
    value: float = loader.construct_yaml_float(node)
    if not math.isfinite(value):
        raise loader.refuse(node, f"{str(node.value)[:40]} is not a finite number (quote it if it is text)")
    return value


def _refuse_tag(loader: _StrictLoader, node: yaml.Node) -> None:
    raise loader.refuse(node, f"{node.tag.replace('tag:yaml.org,2002:', '!!')} is not accepted: use text, numbers, true/false, lists and mappings")


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_StrictLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)
_StrictLoader.add_constructor("tag:yaml.org,2002:float", _construct_float)
for _tag in ("binary", "set", "omap", "pairs", "timestamp"):
    _StrictLoader.add_constructor(f"tag:yaml.org,2002:{_tag}", _refuse_tag)
_NOT_IMPLICIT = ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:timestamp")  # 2024-01-01 stays text
_StrictLoader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag not in _NOT_IMPLICIT]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_StrictLoader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


def load_yaml(text: str, source: str = "<spec>") -> Any:
    """Decode YAML strictly; raise ``SpecError`` with line and column on malformed input."""
    size = len(text) if len(text) > MAX_YAML_BYTES else len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_YAML_BYTES:
        raise SpecError("", f"{source}: {size} bytes of YAML, more than the {human_bytes(MAX_YAML_BYTES)} a document may be")
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        if isinstance(exc, _Refused):
            raise SpecError(exc.path, f"{problem} ({source}, {where})") from None
        raise SpecError("", f"{source}: malformed YAML{' at ' + where if where else ''}: {problem}") from None
