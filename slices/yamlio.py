"""Strict YAML for everything people write: slice specs and daemon configs.

Duplicate keys are errors, only true/false are booleans (YAML 1.1 turns ``country: NO``,
Norway, into ``False``), and malformed input becomes a ``SpecError`` with line and column.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from slices.errors import SpecError


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys and reads only true/false as booleans."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_StrictLoader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_StrictLoader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


def load_yaml(text: str, source: str = "<spec>") -> Any:
    """Decode YAML strictly; raise ``SpecError`` with line and column on malformed input."""
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError("", f"{source}: malformed YAML{where}: {problem}") from None
